"""The auth policy and the API key format (no network)."""

from __future__ import annotations

import pytest

from jobyard.api.auth import auth_policy_problem, is_loopback
from jobyard.auth.principal import OPEN_PRINCIPAL, Principal, checked_scopes, hash_key, new_key, prefix_of
from jobyard.config import Settings
from jobyard.errors import ConfigurationError, ValidationError


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.53", "::1", "[::1]", "localhost"])
def test_loopback_hosts_are_recognised(host: str) -> None:
    assert is_loopback(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.0.0.5", "example.org", ""])
def test_other_hosts_are_not_loopback(host: str) -> None:
    assert not is_loopback(host)


def test_auto_refuses_a_non_loopback_bind_without_keys_and_says_how_to_fix_it() -> None:
    problem = auth_policy_problem(Settings(host="0.0.0.0"), any_key=False)
    assert problem is not None
    assert "refusing to serve on 0.0.0.0 without API keys" in problem
    assert "jobyard keys create" in problem and "JOBYARD_AUTH=off" in problem


def test_auto_allows_loopback_without_keys_and_any_bind_with_keys() -> None:
    assert auth_policy_problem(Settings(host="127.0.0.1"), any_key=False) is None
    assert auth_policy_problem(Settings(host="0.0.0.0"), any_key=True) is None


def test_required_and_off_are_explicit_choices_that_start_anywhere() -> None:
    assert auth_policy_problem(Settings(host="0.0.0.0", auth="required"), any_key=False) is None
    assert auth_policy_problem(Settings(host="0.0.0.0", auth="off"), any_key=False) is None


def test_an_unknown_auth_policy_is_a_configuration_error_naming_the_variable() -> None:
    with pytest.raises(ConfigurationError, match="JOBYARD_AUTH"):
        Settings.from_env({"JOBYARD_AUTH": "sometimes"})


def test_a_new_key_is_stored_as_its_hash_and_found_by_its_prefix() -> None:
    made = new_key()
    assert made.key.startswith(f"jy_{made.prefix}_") and len(made.key) > 50
    assert prefix_of(made.key) == made.prefix
    assert made.key_hash == hash_key(made.key) and made.key not in made.key_hash
    assert new_key().key != made.key


@pytest.mark.parametrize("presented", ["", "jy_", "jy_abc_secret", "xx_0123456789ab_" + "s" * 40, "jy_0123456789ab_"])
def test_malformed_keys_have_no_prefix(presented: str) -> None:
    assert prefix_of(presented) is None


def test_scopes_are_checked_and_put_in_order() -> None:
    assert checked_scopes(["admin", "jobs:read", "jobs:read"]) == ("jobs:read", "admin")
    with pytest.raises(ValidationError, match="unknown scope"):
        checked_scopes(["jobs:read", "root"])
    with pytest.raises(ValidationError, match="at least one scope"):
        checked_scopes([])


def test_admin_implies_every_scope_and_other_scopes_only_themselves() -> None:
    admin = Principal("acme", frozenset({"admin"}), "key")
    reader = Principal("acme", frozenset({"jobs:read"}), "key")
    assert admin.allows("jobs:write") and admin.allows("jobs:read")
    assert reader.allows("jobs:read") and not reader.allows("jobs:write") and not reader.allows("admin")
    assert OPEN_PRINCIPAL.tenant == "default" and OPEN_PRINCIPAL.allows("admin")


def test_rate_limits_count_per_key_whichever_header_carries_it() -> None:
    from jobyard.api.ratelimit import caller_identity

    by_bearer = caller_identity({"headers": [(b"authorization", b"Bearer jy_k")], "client": ("10.0.0.1", 1)})
    by_header = caller_identity({"headers": [(b"x-api-key", b"jy_k")], "client": ("10.0.0.1", 1)})
    anonymous = caller_identity({"headers": [], "client": ("10.0.0.1", 1)})
    assert by_bearer.startswith("key:") and by_header.startswith("key:") and by_header != anonymous
    assert "jy_k" not in by_bearer + by_header


def test_the_schema_says_how_to_present_a_key_on_every_operation_that_checks_one() -> None:
    from jobyard.api import create_app, deps
    from jobyard.sdk import load_yard

    schema = create_app(Settings(), load_yard(None)).openapi()
    assert schema["components"]["securitySchemes"] == deps.SECURITY_SCHEMES
    operations = {(path, method): op for path, ops in schema["paths"].items() for method, op in ops.items()}
    secured = {where for where, op in operations.items() if "security" in op}
    public = set(operations) - secured
    assert public == {("/healthz", "get"), ("/readyz", "get"), ("/metrics", "get")}
    assert ("/api/jobs/{job_id}/status", "get") in secured and ("/api/jobs", "post") in secured
    assert all(operations[where]["security"] == deps.SECURITY for where in secured)
