"""The sandbox manager against the real engine: hardened tenant containers, every tool end to end, state per
session, isolation between tenants, the per-tenant call cap and tool denial."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from sandbox_support import ok, wait_until

from policies.loader import policy_for
from policies.model import Policy
from toolrunner.errors import InvalidTenant, ToolDenied, TooManyCalls

pytestmark = [pytest.mark.docker, pytest.mark.timeout(180)]


def test_tenant_container_is_hardened_as_inspected(harness: Any) -> None:
    """A tenant's container starts its runner as root with only SETUID/SETGID/KILL (the runner drops to its
    own uid, tools get none), read-only, limited, without network or socket."""
    container_id = harness.run(harness.manager.ensure_started("alice"))
    attrs = harness.run(harness.manager.backend.inspect(container_id))
    hc, policy = attrs["HostConfig"], policy_for("ci")
    assert attrs["Config"]["User"] == "0:0"
    assert attrs["Config"]["Cmd"][-4:] == ["--isolation", "uid", "--tool-gid", "1000"]
    assert hc["CapDrop"] == ["ALL"] and sorted(hc["CapAdd"]) == ["KILL", "SETGID", "SETUID"]
    assert hc["Privileged"] is False
    assert hc["ReadonlyRootfs"] is True and hc["SecurityOpt"] == ["no-new-privileges"]
    assert hc["PidsLimit"] == policy.pids and hc["NanoCpus"] == int(policy.cpus * 1e9)
    assert hc["Memory"] == hc["MemorySwap"] == policy.memory_mb << 20
    assert hc["NetworkMode"] == "none"
    assert [m["Destination"] for m in attrs["Mounts"]] == ["/workspace"]
    assert not any("docker.sock" in m["Source"] for m in attrs["Mounts"])
    labels = attrs["Config"]["Labels"]
    assert labels["openanalyst.tenant"] == "alice" and labels["openanalyst.policy"] == "ci"
    assert labels["openanalyst.server"] == harness.config.instance_id


def test_every_tool_kind_runs_through_the_manager(harness: Any) -> None:
    """bash, python, javascript, repl and the file tools all answer through the one attached channel."""
    t = "alice"
    assert "hi-bash" in ok(harness.bash(t, "echo hi-bash"))
    assert "42" in ok(harness.call(t, "python", {"code": "print(6*7)"}))
    assert "js-7" in ok(harness.call(t, "javascript", {"code": "console.log('js-' + (3+4))"}))
    assert "5" in ok(harness.call(t, "repl", {"code": "2+3"}))
    ok(harness.call(t, "write_file", {"path": "notes/a.txt", "content": "alpha\nbeta\n"}))
    assert "beta" in ok(harness.call(t, "read_file", {"path": "notes/a.txt"}))
    ok(harness.call(t, "edit_file", {"path": "notes/a.txt", "old_string": "beta", "new_string": "gamma"}))
    assert "notes/a.txt" in ok(harness.call(t, "grep_search", {"pattern": "gam+a"}))
    assert "gamma" in ok(harness.call(t, "grep_search", {"pattern": "gam+a", "output_mode": "content"}))
    assert "notes/a.txt" in ok(harness.call(t, "glob_search", {"pattern": "**/*.txt"}))
    notebook = {"cells": [{"cell_type": "code", "source": "x = 1", "metadata": {}, "outputs": [],
                           "execution_count": None}], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    ok(harness.call(t, "write_file", {"path": "n.ipynb", "content": json.dumps(notebook)}))
    ok(harness.call(t, "notebook_edit", {"path": "n.ipynb", "cell_index": 0, "new_source": "x = 2"}))
    assert "x = 2" in ok(harness.call(t, "read_file", {"path": "n.ipynb"}))
    host_file = harness.config.data_dir / "workspaces" / t / "notes" / "a.txt"
    st = host_file.stat()
    # Owned by the session's own uid, in the workspace group, writable by that group (the other sessions).
    assert host_file.read_text() == "alpha\ngamma\n" and 10000 <= st.st_uid < 11000
    assert st.st_gid == 1000 and st.st_mode & 0o060 == 0o060


def test_python_and_javascript_may_open_their_own_output_by_name(harness: Any) -> None:
    """/dev/stdout and /dev/stderr (reopened through /proc/self/fd) work in the python and javascript tools as
    they do in bash: the output pipes the runner makes are writable by the call's own process."""
    t = "alice"
    code = "open('/dev/stdout', 'w').write('py-out\\n')\nopen('/dev/stderr', 'w').write('py-err\\n')"
    assert ok(harness.call(t, "python", {"code": code})) == "py-out\npy-err\n"
    js = ("const fs = require('fs'); fs.writeFileSync('/dev/stdout', 'js-out\\n');"
          " fs.writeFileSync('/dev/stderr', 'js-err\\n')")
    assert ok(harness.call(t, "javascript", {"code": js})) == "js-out\njs-err\n"


def test_shell_and_repl_state_persist_within_a_session_only(harness: Any) -> None:
    """cwd, exports and REPL names survive between calls of one session and are absent in another."""
    t = "alice"
    ok(harness.bash(t, "mkdir -p deep/er && cd deep/er && export MARK=m-123", session="one"))
    ok(harness.call(t, "repl", {"code": "secret_name = 'r-456'"}, session="one"))
    assert "deep/er" in ok(harness.bash(t, "pwd", session="one"))
    assert "m-123" in ok(harness.bash(t, "echo $MARK", session="one"))
    assert "r-456" in ok(harness.call(t, "repl", {"code": "secret_name"}, session="one"))
    assert "deep/er" not in ok(harness.bash(t, "pwd", session="two"))
    assert "m-123" not in ok(harness.bash(t, "echo x$MARK", session="two"))
    other = harness.call(t, "repl", {"code": "secret_name"}, session="two").result
    assert "r-456" not in other.output and ("NameError" in other.output or other.error is not None)
    harness.run(harness.manager.close_session(t, "one"))
    after = harness.call(t, "repl", {"code": "secret_name"}, session="one").result
    assert "r-456" not in after.output


def test_tenants_cannot_see_each_others_files_processes_or_container(harness: Any) -> None:
    """Tenant B sees none of A's files, processes or workspace path, and gets its own container."""
    ok(harness.call("alice", "write_file", {"path": "private.txt", "content": "alice-secret"}))
    ok(harness.call("alice", "bash", {"command": "sleep 311", "run_in_background": True}))
    a_id = harness.run(harness.manager.ensure_started("alice"))
    b_id = harness.run(harness.manager.ensure_started("bob"))
    assert a_id != b_id
    assert "sleep 311" in ok(harness.bash("alice", "ps -eo args"))
    assert "sleep 311" not in ok(harness.bash("bob", "ps -eo args"))
    listing = ok(harness.bash("bob", "ls -la /workspace; find / -name private.txt 2>/dev/null"))
    assert "private.txt" not in listing
    host_path = harness.config.data_dir / "workspaces" / "alice"
    assert "absent" in ok(harness.bash("bob", f"test -e {host_path} && echo present || echo absent"))
    escaped = harness.call("bob", "read_file", {"path": "../alice/private.txt"}).result
    assert escaped.error is not None and "alice-secret" not in escaped.output
    assert "alice-secret" not in ok(harness.bash("bob", "cat /workspace/../*/private.txt 2>&1; true"))


def test_calls_beyond_the_policy_cap_are_refused_with_retry_after(harness: Any) -> None:
    """With max_concurrent_calls in flight, the next call raises TooManyCalls carrying a retry-after hint."""
    cap = policy_for("ci").max_concurrent_calls
    futures = [harness.submit(harness.manager.call("carol", "s", "bash", {"command": "sleep 3"}))
               for _ in range(cap)]
    wait_until(lambda: harness.run(harness.manager.info("carol"))["calls_in_flight"] == cap, 30, "cap")
    with pytest.raises(TooManyCalls) as info:
        harness.call("carol", "bash", {"command": "true"})
    assert info.value.retry_after_s > 0 and info.value.code == "TOO_MANY_CALLS"
    assert all(f.result(60).result.error is None for f in futures)
    ok(harness.bash("carol", "true"))


def test_denied_tool_and_bad_tenant_are_refused(harness: Any) -> None:
    """A tool the tenant's policy denies raises ToolDenied; an unsafe tenant id raises InvalidTenant."""
    harness.policies["dave"] = Policy.model_validate({**policy_for("ci").model_dump(),
                                                      "denied_tools": ["javascript"]})
    with pytest.raises(ToolDenied):
        harness.call("dave", "javascript", {"code": "1"})
    for bad in ("../x", "", ".hidden", "a/b", "x" * 70):
        with pytest.raises(InvalidTenant):
            harness.call(bad, "bash", {"command": "true"})


def test_info_reports_state_limits_and_live_usage(harness: Any) -> None:
    """info() names the container, its policy and limits, and samples memory and pids now."""
    harness.run(harness.manager.ensure_started("alice"))
    info = harness.run(harness.manager.info("alice"))
    assert info["state"] == "running" and info["policy"] == "ci" and info["limits"]["memory_mb"] == 256
    assert info["usage"]["memory_bytes"] > 0 and info["usage"]["pids"] >= 2
    absent = harness.run(harness.manager.info("nobody-yet"))
    assert absent["state"] == "absent" and absent["usage"] is None


def test_idle_container_stops_and_the_next_call_restarts_it(harness_factory: Any) -> None:
    """After idle_timeout_s the reaper stops the container; the next call starts it again, files intact."""
    h = harness_factory(idle_timeout_s=1.0)
    ok(h.call("erin", "write_file", {"path": "keep.txt", "content": "kept"}))
    wait_until(lambda: h.run(h.manager.info("erin"))["state"] == "stopped", 30, "idle stop")
    assert "kept" in ok(h.call("erin", "read_file", {"path": "keep.txt"}))
    assert h.run(h.manager.info("erin"))["state"] == "running"


def test_prestart_starts_the_container_in_the_background(harness: Any) -> None:
    """prestart returns at once and the container it starts serves the tenant's first call."""
    started = time.monotonic()
    harness.run(harness.manager.prestart("frank"))
    assert time.monotonic() - started < 0.5
    wait_until(lambda: harness.run(harness.manager.info("frank"))["state"] == "running", 30, "prestart")
    container_id = harness.run(harness.manager.info("frank"))["container_id"]
    assert harness.bash("frank", "true").container_id == container_id


def test_owner_runs_as_the_owner_of_its_workspace(harness_factory: Any, tmp_path_factory: Any) -> None:
    """The owner tenant works in the configured directory as that directory's uid:gid, not as root."""
    import os

    data_dir = tmp_path_factory.mktemp("owner-data")
    workspace = data_dir / "project"
    workspace.mkdir()
    os.chown(workspace, 1234, 1234)
    h = harness_factory(data_dir, owner_workspace=workspace)
    assert ok(h.bash("owner", "id -u; id -g")).split() == ["1234", "1234"]
    ok(h.call("owner", "write_file", {"path": "report.md", "content": "# done"}))
    written = workspace / "report.md"
    assert written.read_text() == "# done" and (written.stat().st_uid, written.stat().st_gid) == (1234, 1234)
