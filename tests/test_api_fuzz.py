"""The OpenAPI schema fuzzed with schemathesis, in process against the app (ASGI), signed in.

Every operation of the schema (read from a table app at import, so a new route is fuzzed by itself)
gets :data:`EXAMPLES` generated requests (``FIELDTRUST_FUZZ_EXAMPLES`` to change it): data that fits
the schema and data that does not, with path parameters either generated or pointing at a seeded
tenant's real objects (tests/support/api_seed.py), so requests get past the lookups into the routes'
logic.  Each is sent as the platform admin or as the tenant's admin.  Every response is checked in
full: no server error (5xx), a status code the schema documents, its content type, and its body
against the schema.

The user rate limit is lifted meanwhile (a few thousand requests a minute from one session would
otherwise be answered 429, which is correct but tests nothing).  ``POST /auth/sign-out`` is left out: it
would end the session the run uses (tests/test_auth_signin.py covers it).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from cloud.api.main import create_app
from cloud.auth import rate_limit
from tests.support.accounts import ADMIN, bearer, running_app, settings_for
from tests.support.api_seed import Seeded, new_release, seed_tenant

pytestmark = pytest.mark.timeout(900)

EXAMPLES = int(os.environ.get("FIELDTRUST_FUZZ_EXAMPLES", "8"))
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
#: operations not fuzzed, and why
SKIP = {"POST /api/v1/auth/sign-out": "it ends the session the fuzzing runs with"}
_METHODS = {"get", "put", "post", "delete", "patch"}
_SPEC = create_app(settings_for("postgresql://nobody@127.0.0.1:1/none")).openapi()
OPERATIONS = [(method.upper(), path) for path, item in _SPEC["paths"].items() for method in item
              if method in _METHODS and f"{method.upper()} {path}" not in SKIP]


@dataclass
class Fuzz:
    schema: object
    seeded: Seeded


@pytest.fixture(scope="module")
def fuzz(module_app_db) -> Iterator[Fuzz]:
    url = module_app_db.owner_url
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(rate_limit, "USER_RATE_LIMIT", 10**9)
        with running_app(url) as app:
            seeded = seed_tenant(app, url, new_release(url), "fz")
            yield Fuzz(schemathesis.openapi.from_asgi("/openapi.json", app), seeded)


def test_every_operation_is_fuzzed() -> None:
    assert len(OPERATIONS) >= 90 and ("GET", "/api/v1/tenants/{tenant}/farms") in OPERATIONS


def test_a_value_the_database_cannot_store_is_a_422(fuzz: Fuzz) -> None:
    """What the fuzzing found first: a NUL character in text or JSON answered 500 (psycopg.DataError).

    Runs before the generated cases, whose clients close the app's pool when they finish."""
    from tests.support.accounts import api, client_of

    seeded = fuzz.seeded
    client = client_of(fuzz.schema.app)  # type: ignore[attr-defined]
    signin = client.post(api("/auth/sign-in"), json={"tenant": seeded.tenant, "login": "a\u0000b", "password": "x"})
    unlock = client.post(api(f"/tenants/{seeded.tenant}/users/{seeded.ids['user_id']}/unlock"),
                         json={"identity_checked": "card\u0000"}, headers=ADMIN)
    for response in (signin, unlock):
        assert response.status_code == 422, response.text
        assert response.json()["error"] == "invalid" and "cannot be stored" in response.json()["message"]


@pytest.mark.parametrize("method,path", OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_operation_answers_within_its_schema(fuzz: Fuzz, method: str, path: str) -> None:
    operation = fuzz.schema[path][method]  # type: ignore[index]
    names = [p.name for p in operation.path_parameters]
    real = {name: fuzz.seeded.ids[name] for name in names if name in fuzz.seeded.ids}
    cases = st.one_of(operation.as_strategy(GenerationMode.POSITIVE),
                      operation.as_strategy(GenerationMode.POSITIVE, path_parameters=real),
                      operation.as_strategy(GenerationMode.NEGATIVE, path_parameters=real))
    callers = st.sampled_from([ADMIN, bearer(fuzz.seeded.tokens["tenant_admin"])])

    @given(case=cases, headers=callers)
    @settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    def run(case: object, headers: dict[str, str]) -> None:
        case.call_and_validate(headers=headers, checks=CHECKS)  # type: ignore[attr-defined]

    run()
