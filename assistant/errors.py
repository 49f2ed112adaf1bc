"""Errors a user can meet. Each message says what was wrong and what to do, in one sentence."""


class AssistantError(Exception):
    """Base class for errors caused by user input (a path, a config, an image), not by a bug."""


class ConfigError(AssistantError, ValueError):
    """A configuration value or choice is invalid."""


class ModelLoadError(AssistantError):
    """A model directory or hub id could not be loaded."""


class ImageError(AssistantError, ValueError):
    """Bytes or a file that cannot be used as an image."""


class InputError(AssistantError, ValueError):
    """Messages and images that do not fit together (slot counts, roles, context length)."""
