"""Schemathesis against the published OpenAPI schema: valid and invalid requests, never a 500."""

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from monitor_testing import make_record
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from attnkit.monitor.server import create_app
from attnkit.monitor.settings import Settings

HEADERS = {"Authorization": "Bearer t"}


@pytest.fixture
def api_schema(tmp_path):
    app = create_app(Settings(db=f"sqlite:///{tmp_path / 'fuzz.db'}", tokens=("t",)))
    return schemathesis.openapi.from_asgi("/openapi.json", app)


@pytest.mark.slow
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_server_errors(api_schema, mode):
    """Every operation, 25 generated requests each (schema-conforming, or not)."""
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) == 10
    statuses = []
    for operation in operations:

        @given(case=operation.as_strategy(mode))
        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
        def call(case):
            response = case.call(headers=HEADERS)
            case.validate_response(response, checks=[not_a_server_error])
            statuses.append(response.status_code)

        call()
    assert max(statuses) < 500
    if mode == GenerationMode.POSITIVE:
        assert statuses.count(200) > len(statuses) / 2  # the fuzzer reached the handlers
    else:
        assert any(400 <= status < 500 for status in statuses)


def test_a_record_from_the_schema_is_stored(api_schema):
    case = api_schema["/v1/records"]["POST"].Case(body=make_record(1))
    response = case.call(headers=HEADERS)
    assert response.status_code == 200 and response.json()["inserted"] == 1
