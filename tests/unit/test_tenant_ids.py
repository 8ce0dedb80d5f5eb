"""Tenant ids as deployments send them → safe names: old names unchanged, everything else prefixed + hashed,
and no two ids sharing a name (case, punctuation, truncation, the mapped shape itself)."""

from __future__ import annotations

import itertools
import re

import pytest

from server.errors import BadRequest
from server.tenancy import TENANT_HEADER_PATTERN, parse_tenant_id
from server.tenant_ids import HEADER_RE, NAME_RE, tenant_name
from toolrunner.config import TENANT_ID, validate_tenant


@pytest.mark.parametrize("tenant", ["team-alpha", "alice", "A.b_c-9", "x" * 64, "_x", "-x", "1.2.3", "owner2"])
def test_names_that_were_valid_are_kept(tenant: str) -> None:
    """Existing tenants keep their directories and containers: a name that was valid is its own name."""
    assert tenant_name(tenant) == tenant
    assert parse_tenant_id(tenant).id == tenant and parse_tenant_id(tenant).header is None


@pytest.mark.parametrize("tenant", ["alice@example.com", "auth0|5f7c8ec7c33c6c004bbafe82", "org:team", "..",
                                    ".hidden", "../../etc/passwd", "a/b", "x" * 65, "Z" * 256, "~!@#$%^&*()"])
def test_deployment_ids_map_to_safe_readable_names(tenant: str) -> None:
    name = tenant_name(tenant)
    assert NAME_RE.match(name) and TENANT_ID.match(name) and validate_tenant(name) == name
    assert "/" not in name and name not in (".", "..") and len(name) <= 64
    assert re.fullmatch(r"[a-z0-9._-]*--[0-9a-f]{24}", name)
    parsed = parse_tenant_id(tenant)
    assert parsed.id == name and parsed.header == tenant and not parsed.is_owner
    assert tenant_name(tenant) == name  # stable across calls (and processes: a plain hash)


def test_readable_prefix() -> None:
    assert tenant_name("alice@example.com").startswith("alice_example.com--")
    assert tenant_name("auth0|abc").startswith("auth0_abc--")
    assert tenant_name("Org:Team").startswith("org_team--")


def test_no_collisions_of_case_punctuation_or_truncation() -> None:
    long_a, long_b = "user-" + "a" * 250 + "1", "user-" + "a" * 250 + "2"  # same first 255 characters
    ids = ["Alice@example.com", "alice@example.com", "ALICE@EXAMPLE.COM", "alice@example_com", "alice_example.com",
           "alice:example.com", "alice|example.com", "org:team", "org|team", "org_team", "Org:Team", "org:team ",
           long_a, long_b, "x" * 64, "x" * 65, "x" * 66, "team", "Team", "TEAM"]
    ids = [i for i in ids if HEADER_RE.match(i)]
    names = {i: tenant_name(i) for i in ids}
    assert len(set(names.values())) == len(ids), names
    # A header of the mapped shape cannot take over the tenant whose name it is: it is hashed itself.
    for original in ("alice@example.com", long_a, "x" * 65):
        spoof = names[original]
        assert tenant_name(spoof) != spoof and tenant_name(spoof) not in names.values()
    for a, b in itertools.combinations(ids, 2):
        assert tenant_name(a) != tenant_name(b)


@pytest.mark.parametrize("value", ["", "x" * 257, "sp ace", "tab\there", "\u00fcn\u00ef", "owner", "OWNER", "Owner"])
def test_refused(value: str) -> None:
    with pytest.raises(BadRequest) as caught:
        parse_tenant_id(value)
    assert caught.value.code == "INVALID_TENANT_ID"
    assert re.match(TENANT_HEADER_PATTERN, value) is None


def test_header_pattern_is_what_is_accepted() -> None:
    for value in ("alice@example.com", "auth0|x", "org:team", "x" * 256, "owner2", "owners"):
        assert re.match(TENANT_HEADER_PATTERN, value)
        parse_tenant_id(value)


def test_tenant_policies_are_configured_by_the_id_clients_send(tmp_path: object) -> None:
    """OPENANALYST_TENANT_POLICIES names tenants as clients do; the sandbox looks them up by safe name."""
    from pathlib import Path

    from policies.loader import policy_for
    from server.settings import Settings
    from server.wiring import tenant_policies

    settings = Settings(data_dir=Path(str(tmp_path)), tenant_policies={"alice@example.com": "ci", "team": "trusted"})
    resolve = tenant_policies(settings)
    assert resolve(tenant_name("alice@example.com")) == policy_for("ci")
    assert resolve("team") == policy_for("trusted")
    assert resolve(tenant_name("bob@example.com")) == policy_for("default")
