"""Schema fuzzing: schemathesis generates requests (valid and invalid) from the server's own OpenAPI schema and
sends them to a real server. No 5xx, every error body in the OpenAI shape, every success body valid against
the schema."""

from __future__ import annotations

import json
from collections import Counter

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import response_schema_conformance

from tests.resilience.conftest import AUTH, is_openai_error


def with_served_model(model_name: str):
    """Half of the generated chat bodies name the served model, so they reach the engine, not only the 404."""

    def fix(pair):
        case, served = pair
        if served and isinstance(case.body, dict) and "model" in case.body:
            case.body["model"] = model_name
        return case

    return fix


def fuzz(base_url: str, model_name: str, per_operation: int) -> Counter:
    """Send up to `per_operation` generated cases per (operation, mode); return counts by status; fail on a
    defect. Operations without inputs have only a few distinct cases, so the chat route gets most requests."""
    schema = schemathesis.openapi.from_url(base_url + "/openapi.json")
    statuses: Counter = Counter()
    defects: list[str] = []
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/v1/chat/completions", "/v1/models", "/health"}
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            strategy = operation.as_strategy(generation_mode=mode)
            if operation.body:
                strategy = st.tuples(strategy, st.booleans()).map(with_served_model(model_name))

            @settings(
                max_examples=per_operation,
                deadline=None,
                database=None,
                derandomize=True,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            @given(case=strategy)
            def run(case) -> None:
                response = case.call(base_url=base_url, headers=AUTH, timeout=60)
                statuses[response.status_code] += 1
                label = f"{case.method} {case.path} -> {response.status_code}"
                if response.status_code >= 500:
                    defects.append(f"{label}: {response.text[:200]}")
                elif response.status_code >= 400:
                    try:
                        body = json.loads(response.content)
                    except ValueError:
                        body = None
                    if not is_openai_error(body):
                        defects.append(f"{label}: not an OpenAI error body: {response.text[:200]}")
                else:
                    try:
                        case.validate_response(response, checks=[response_schema_conformance])
                    except Exception as exc:  # schemathesis raises a failure group naming what did not match
                        defects.append(f"{label}: body does not match the schema: {str(exc)[:300]}")

            try:
                run()
            except Unsatisfiable:  # an operation with no inputs has no invalid form to send
                assert mode is GenerationMode.NEGATIVE and not operation.body, operation.path
    assert not defects, "\n".join(defects[:20])
    return statuses


def test_schema_fuzz_100_requests(base_url, model_name):
    statuses = fuzz(base_url, model_name, per_operation=50)
    assert sum(statuses.values()) >= 100, statuses


@pytest.mark.slow
def test_schema_fuzz_1000_requests(base_url, model_name):
    statuses = fuzz(base_url, model_name, per_operation=500)
    assert sum(statuses.values()) >= 1000, statuses
