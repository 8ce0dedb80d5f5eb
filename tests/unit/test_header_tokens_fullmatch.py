"""The header patterns end in ``$``, which also matches before a final newline; the checks use ``fullmatch``,
so a value ending in a newline is never taken as a tenant id, a tenant directory name or a request id."""

from __future__ import annotations

import pytest

from server.errors import BadRequest
from server.observability.request_id import accept_request_id
from server.tenancy import parse_tenant_id
from server.tenant_ids import tenant_name


def test_a_tenant_id_ending_in_a_newline_is_refused() -> None:
    with pytest.raises(BadRequest):
        parse_tenant_id("acme\n")
    assert parse_tenant_id("acme").id == "acme"


def test_a_name_ending_in_a_newline_is_never_its_own_directory_name() -> None:
    assert "\n" not in tenant_name("acme\n")
    assert tenant_name("acme") == "acme"


def test_a_request_id_ending_in_a_newline_is_replaced() -> None:
    assert accept_request_id(b"abc\n") != "abc\n"
    assert accept_request_id(b"abc") == "abc"


def test_the_sandbox_manager_refuses_a_tenant_name_ending_in_a_newline() -> None:
    """Its own check, independent of the server's: a directory and container label name never holds a newline."""
    from toolrunner.config import validate_tenant
    from toolrunner.errors import InvalidTenant

    with pytest.raises(InvalidTenant):
        validate_tenant("acme\n")
    assert validate_tenant("acme") == "acme"


def test_an_egress_rule_with_a_newline_inside_a_label_is_refused() -> None:
    from policies.network import parse_rule

    with pytest.raises(ValueError, match="not a valid DNS label"):
        parse_rule("pypi\n.org")
    assert parse_rule("pypi.org").name == "pypi.org"
