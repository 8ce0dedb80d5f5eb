"""After a build: does the environment's image still keep the base's hardening (docs/runner-trust.md)?

Three looks, each compared with the base: the image config (user, entrypoint, command, working directory);
the runner's own ``hello`` from a container of the image started with the sandbox's capabilities and stdin
closed (it must pass ``runner_identity_mismatches``); and a probe run with ``python3 -I`` that lists setuid and
setgid files, the session and runner uids in ``/etc/passwd``, the mode of ``oa-shell`` and a hash of the runner
files. The probe has ``CAP_DAC_READ_SEARCH`` only, so a file in a directory closed to root's uid is still seen.
"""

from __future__ import annotations

import json
from typing import Any

from policies.docker_args import runner_identity_mismatches
from toolrunner.envbuild.errors import EnvironmentHardeningLost, tail

PROBE_TIMEOUT_S = 120
CONFIG_KEYS = ("User", "Entrypoint", "Cmd", "WorkingDir")
PROBE = r"""
import hashlib, json, os, stat
special, skip = [], {"/proc", "/sys", "/dev", "/tmp", "/workspace"}
for root, dirs, files in os.walk("/"):
    dirs[:] = [d for d in dirs if os.path.join(root, d) not in skip]
    for name in files:
        path = os.path.join(root, name)
        try:
            st = os.lstat(path)
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode) and st.st_mode & (stat.S_ISUID | stat.S_ISGID):
            special.append(path)
uids = set()
for line in open("/etc/passwd"):
    parts = line.split(":")
    if len(parts) > 3 and parts[2].isdigit():
        uids.add(int(parts[2]))
shell = os.stat("/usr/libexec/openanalyst/oa-shell")
h = hashlib.sha256()
base = "/opt/openanalyst/toolrunner"
for root, dirs, files in sorted(os.walk(base)):
    dirs.sort()
    for name in sorted(files):
        if name.endswith(".py"):
            path = os.path.join(root, name)
            h.update(path.encode() + b"\0" + open(path, "rb").read())
print(json.dumps({"special": sorted(special), "runner_uid": 999 in uids,
                  "session_uids": sum(1 for u in range(10000, 11000) if u in uids),
                  "oa_shell": [oct(stat.S_IMODE(shell.st_mode)), shell.st_uid], "runner": h.hexdigest()}))
"""


def _run(client: Any, image: str, labels: dict[str, str], **kwargs: Any) -> bytes:
    """Run to the end, then read stdout (attaching to a container this short-lived can miss its output)."""
    container = client.containers.run(image, detach=True, network_mode="none", labels=labels,
                                      security_opt=["no-new-privileges"], read_only=True,
                                      tmpfs={"/tmp": "size=16m"}, mem_limit="256m", pids_limit=64, **kwargs)
    try:
        container.wait(timeout=PROBE_TIMEOUT_S)
        return bytes(container.logs(stdout=True, stderr=False))
    finally:
        container.remove(force=True)


def probe(client: Any, image: str, labels: dict[str, str]) -> dict[str, Any]:
    """What the probe reports about ``image`` (see the module docstring)."""
    out = _run(client, image, labels, command=["python3", "-I", "-c", PROBE], user="0:0", entrypoint=[],
               cap_drop=["ALL"], cap_add=["DAC_READ_SEARCH"])
    try:
        facts: dict[str, Any] = json.loads(out.decode(errors="replace").strip().splitlines()[-1])
    except (ValueError, IndexError) as exc:
        raise EnvironmentHardeningLost(f"the hardening probe gave no answer: {tail(out.decode(errors='replace'), 500)}"
                                       ) from exc
    return facts


def runner_hello(client: Any, image: str, labels: dict[str, str]) -> dict[str, Any]:
    """The runner's hello frame, from the image's own command with the sandbox's three capabilities."""
    out = _run(client, image, labels, cap_drop=["ALL"], cap_add=["SETUID", "SETGID", "KILL"], init=True)
    text = out.decode(errors="replace")
    start = text.find('{"')
    try:
        hello, _ = json.JSONDecoder().raw_decode(text[start:]) if start >= 0 else (None, 0)
    except ValueError:
        hello = None
    if not isinstance(hello, dict) or hello.get("type") != "hello":
        raise EnvironmentHardeningLost(f"the runner did not say hello: {tail(text, 500)!r}")
    return hello


def mismatches(base_config: dict[str, Any], env_config: dict[str, Any], base: dict[str, Any],
               env: dict[str, Any], hello: dict[str, Any]) -> list[str]:
    """Every way the environment's image differs from its base in what the sandbox relies on."""
    problems = [f"image {key} changed: {base_config.get(key)!r} -> {env_config.get(key)!r}"
                for key in CONFIG_KEYS if base_config.get(key) != env_config.get(key)]
    added = sorted(set(env["special"]) - set(base["special"]))
    if added:
        problems.append("setuid/setgid files added: " + ", ".join(added[:20]))
    for key in ("runner_uid", "session_uids", "oa_shell", "runner"):
        if env.get(key) != base.get(key):
            problems.append(f"{key} changed: {base.get(key)!r} -> {env.get(key)!r}")
    problems += runner_identity_mismatches(hello.get("identity"), "uid")
    return problems


def check(client: Any, base: str, image: str, labels: dict[str, str],
          base_facts: dict[str, Any] | None = None) -> dict[str, Any]:
    """Raise ``EnvironmentHardeningLost`` listing what ``image`` lost against ``base``; the base's facts
    (probed when not given) are returned so a caller can reuse them for the next build on that base."""
    base_facts = base_facts or probe(client, base, labels)
    problems = mismatches(client.api.inspect_image(base)["Config"], client.api.inspect_image(image)["Config"],
                          base_facts, probe(client, image, labels), runner_hello(client, image, labels))
    if problems:
        raise EnvironmentHardeningLost("the built image does not keep the sandbox's hardening: "
                                       + "; ".join(problems))
    return base_facts
