"""Property-based fuzzing of the admin API from its own OpenAPI: no input gives a 5xx, and
every answer matches the documented status codes, content types and schemas."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from control_plane.api import create_app
from core.settings import Settings
from tests.control_plane.conftest import ADMIN_TOKEN, admin_settings

with warnings.catch_warnings():  # starlette nudges towards httpx2; httpx works the same here
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

pytestmark = pytest.mark.kafka

# The document only: routes and models do not depend on the settings.
schema = schemathesis.openapi.from_dict(create_app(Settings()).openapi())
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]


@pytest.fixture(scope="module")
def client(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """One running admin API (lifespan started once) for every generated case."""
    db = Path(tmp_path_factory.mktemp("schemathesis")) / "var" / "hookstream.db"
    app = create_app(admin_settings(f"sqlite:///{db}", kafka_bootstrap, "tschemathesis."))
    with TestClient(app, raise_server_exceptions=False) as c:
        # Something for the generated ids to sometimes hit besides 404s.
        survey = c.post("/v1/surveys", headers=AUTH, json={
            "name": "s", "variables": [{"name": "city", "type": "text"}]}).json()
        message = c.post("/v1/messages", headers=AUTH,
                         json={"name": "m", "subject": "s", "body": "{{ city }}"}).json()
        r = c.post("/v1/automations", headers=AUTH, json={
            "name": "a", "survey_id": survey["id"], "message_id": message["id"],
            "email_field": "email", "fields": {"mode": "exclude", "paths": []}})
        assert r.status_code == 201, r.text
        yield c


@schema.parametrize()
@settings(max_examples=12, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_admin_api_never_fails(case: schemathesis.Case, client: TestClient) -> None:
    kwargs = case.as_transport_kwargs(base_url="http://testserver", headers=AUTH)
    kwargs.pop("allow_redirects", None)
    response = client.request(**kwargs)
    assert response.status_code < 500, response.text
    case.validate_response(response, checks=CHECKS)
