"""Environment images against the real engine: Debian, Python and npm packages fetched on the host and built
offline, each used by a tool call; a bad definition fails with the build's own error; the same definition is
built once; an image that gains a setuid file is refused and removed."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker.errors
import pytest
from sandbox_support import Harness, make_config, ok
from test_environments_support import tiny_packages

from toolrunner.envbuild import (
    EnvironmentBuilder,
    EnvironmentBuildFailed,
    EnvironmentHardeningLost,
    Sources,
    definition,
)
from toolrunner.envbuild.errors import EnvironmentBusy

pytestmark = pytest.mark.timeout(600)
LABELS = {"openanalyst.test": "1"}


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sources]:
    """A local PEP 503 index with the wheel ``oatiny`` and an npm registry with ``oa-tiny-js``."""
    with tiny_packages(tmp_path_factory.mktemp("packages")) as served:
        yield Sources(pip_index_url=served.pip_index, npm_registry=served.url)


@pytest.fixture(scope="module")
def builder(docker_client: Any, sources: Sources) -> Iterator[EnvironmentBuilder]:
    """A builder whose images are removed at the end (each test's definition is unique to this run)."""
    b = EnvironmentBuilder(docker_client, sources, labels=LABELS)
    made: list[str] = []
    b.made = made  # type: ignore[attr-defined]
    yield b
    for tag in made:
        with contextlib.suppress(docker.errors.NotFound):
            docker_client.api.remove_image(tag, force=True)


def marker() -> str:
    """A fragment that makes a definition unique to this run, so the build really happens."""
    return f"RUN echo {uuid.uuid4().hex} > /etc/oa-test-marker"


def build(builder: EnvironmentBuilder, base: str, **kw: Any) -> tuple[Any, list[str]]:
    lines: list[str] = []
    built = builder.ensure(definition(**kw), base, lines.append)
    builder.made.append(built.tag)  # type: ignore[attr-defined]
    return built, lines


def test_debian_python_npm_packages_used_by_tool_calls(builder: EnvironmentBuilder, sandbox_image: str,
                                                       tmp_path: Path) -> None:
    """jq from Debian, a wheel from the local index and an npm package all work in a tool call."""
    built, lines = build(builder, sandbox_image, debian=["jq"], python=["oatiny==1.0"],
                         npm=["oa-tiny-js@1.0.0"], dockerfile=marker())
    assert built.built and built.tag.startswith("openanalyst/env:")
    assert any("network none" in line for line in lines)
    h = Harness(make_config(tmp_path, sandbox_image))
    try:
        out = ok(h.run(h.manager.call("acme", "s1", "bash", {"command": (
            "echo '{\"a\": 41}' | jq '.a + 1'; python3 -c 'import oatiny; print(oatiny.hello())'; "
            "node -e \"console.log(require('oa-tiny-js').hello())\"; oa-tiny")}, image=built.tag), 120))
        assert out.split("\n")[:4] == ["42", "hello from oatiny", "hi from oa-tiny-js", "cli says hi from oa-tiny-js"]
        plain = ok(h.bash("acme", "command -v jq || echo no jq"))  # the default image again: replaced
        assert plain.strip() == "no jq"
        busy = h.submit(h.manager.call("acme", "s1", "bash", {"command": "sleep 3; echo slept"}))
        with pytest.raises(EnvironmentBusy):  # a call in flight in the plain image: not replaced under it
            h.run(h.manager.call("acme", "s2", "bash", {"command": "true"}, image=built.tag))
        assert ok(busy.result(60)).strip() == "slept"
    finally:
        h.close()


def test_build_offline_network_is_none(builder: EnvironmentBuilder, sandbox_image: str) -> None:
    """A RUN step cannot reach the network (the build container has none): the build fails with its error."""
    with pytest.raises(EnvironmentBuildFailed) as err:
        build(builder, sandbox_image, dockerfile=marker() + "\nRUN cat /sys/class/net/*/address | grep -v "
              "'00:00:00:00:00:00' && echo has-network || (echo 'no network here' >&2; exit 7)")
    assert "no network here" in err.value.message and "non-zero code: 7" in err.value.message


def test_unknown_debian_package_fails_with_apt_error(builder: EnvironmentBuilder, sandbox_image: str) -> None:
    """A package Debian does not have fails with apt's own words, bounded, code ENVIRONMENT_BUILD_FAILED."""
    with pytest.raises(EnvironmentBuildFailed) as err:
        build(builder, sandbox_image, debian=["oa-no-such-package"], dockerfile=marker())
    assert err.value.code == "ENVIRONMENT_BUILD_FAILED"
    assert "Unable to locate package oa-no-such-package" in err.value.message
    assert len(err.value.message) < 4200


def test_same_definition_built_once(builder: EnvironmentBuilder, docker_client: Any, sources: Sources,
                                   sandbox_image: str) -> None:
    """Two builders (two tenants) asking for one definition get one image; the second does not build."""
    fragment = marker()
    first, _ = build(builder, sandbox_image, dockerfile=fragment)
    other = EnvironmentBuilder(docker_client, sources, labels=LABELS)
    second = other.ensure(definition(dockerfile=fragment + "\n"), sandbox_image, lambda _line: None)
    assert first.built and not second.built
    assert (second.tag, second.image_id) == (first.tag, first.image_id)


def test_setuid_fragment_refused_and_removed(builder: EnvironmentBuilder, docker_client: Any,
                                             sandbox_image: str) -> None:
    """A fragment that adds a setuid file (in a directory closed to root's uid) builds, fails the check, and
    leaves no image behind."""
    defn = definition(dockerfile=marker() + "\nRUN install -d -m 0700 /opt/hidden && cp /bin/true "
                      "/opt/hidden/t && chown -R 999 /opt/hidden && chmod u+s /opt/hidden/t")
    with pytest.raises(EnvironmentHardeningLost) as err:
        builder.ensure(defn, sandbox_image, lambda _line: None)
    assert "setuid/setgid files added: /opt/hidden/t" in err.value.message
    assert err.value.code == "ENVIRONMENT_BUILD_FAILED"
    assert builder.find(defn, sandbox_image) is None
    digest = builder.key(defn, sandbox_image)
    with pytest.raises(docker.errors.NotFound):
        docker_client.api.inspect_image(f"openanalyst/env-unchecked:{digest[:16]}")
