"""The API keeps its published contract under a third-party fuzzer (schemathesis, in process over ASGI).

Every operation, with schema-valid and schema-violating requests: no 5xx, no schema-violating request
accepted, no schema-valid request refused as malformed (404/409/415 stay: the fuzzer cannot know which
names and ids exist, nor send audio), and every answer matches its documented status, content type and
body schema. The default run draws a few examples per operation; ``-m slow`` runs a larger one.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    positive_data_acceptance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.config import PositiveDataAcceptanceConfig

from vela_search.serve.app import create_app
from vela_search.serve.service import ServeSettings, Service

CHECKS = [
    not_a_server_error,
    negative_data_rejection,
    positive_data_acceptance,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def api_schema(serve_collection):
    service = Service.open([("idx", serve_collection[1])], ServeSettings())
    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(service))
    schema.config.generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
    schema.config.checks.update(
        included_check_names=[c.__name__ for c in CHECKS],
    )
    schema.config.checks.positive_data_acceptance = PositiveDataAcceptanceConfig(
        # 415: an upload's bytes are schema-valid whatever they hold; only decoding tells audio from not.
        expected_statuses=["2XX", "404", "409", "415"]
    )
    return schema


def inverted(case) -> bool:
    """A duration range whose minimum is above its maximum: refused (400), as its description says.

    JSON Schema cannot state a relation between two fields, so this one rule lives in prose.
    """
    body = case.body if isinstance(case.body, dict) else {}
    low, high = body.get("min_duration"), body.get("max_duration")
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high))
    return numbers and low > high


def fuzz(schema, examples: int) -> None:
    """Every operation, with valid and with schema-violating requests, ``examples`` of each."""
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 5
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(case=operation.as_strategy(generation_mode=mode).filter(lambda c: not inverted(c)))
            @settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck))
            def run(case) -> None:
                case.call_and_validate(checks=CHECKS)

            try:
                run()
            except Unsatisfiable:
                if mode is GenerationMode.POSITIVE:
                    raise  # (an operation without parameters has no schema-violating request)


def test_the_api_keeps_its_contract(api_schema):
    fuzz(api_schema, examples=3)


@pytest.mark.slow
def test_the_api_keeps_its_contract_at_length(api_schema):
    fuzz(api_schema, examples=300)
