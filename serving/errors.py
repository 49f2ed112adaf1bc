"""API errors: each maps to one HTTP status and an OpenAI-shaped body {"error": {message, type, param, code}}."""

from __future__ import annotations


class APIError(Exception):
    """An error the client sees. `message` is one sentence saying what was wrong and what to do."""

    status: int = 400
    type: str = "invalid_request_error"
    code: str | None = None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class InvalidRequest(APIError):
    status = 400
    code = "invalid_request"


class ContextLengthExceeded(APIError):
    status = 400
    code = "context_length_exceeded"


class AuthenticationFailed(APIError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class NotFound(APIError):
    status = 404
    code = "not_found"


class PayloadTooLarge(APIError):
    status = 413
    code = "request_too_large"


class Overloaded(APIError):
    status = 429
    type = "rate_limit_error"
    code = "server_overloaded"


class UpstreamFailed(APIError):
    status = 502
    type = "server_error"
    code = "upstream_error"


class EngineUnavailable(APIError):
    status = 503
    type = "server_error"
    code = "engine_unavailable"


class GenerationFailed(APIError):
    """A request-level failure while generating (vLLM's finish reason "error", documented as retryable)."""

    status = 503
    type = "server_error"
    code = "generation_failed"


def error_body(
    status: int, message: str, type_: str = "invalid_request_error", code: str | None = None
) -> dict:
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}
