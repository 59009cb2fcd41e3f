"""Static checks of deploy/Dockerfile and deploy/aibridge.service (no Docker engine or systemd
PID 1 is needed). Run: `.venv/bin/python -m pytest deploy/test_deploy.py`.

Both must run the same mitmdump command with the same layout, every COPY source must exist and
survive the Dockerfile's .dockerignore, and nothing secret (certs/) may enter the image.
"""

from __future__ import annotations

import fnmatch
import json
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
from mitmproxy import options
from mitmproxy.tools import cmdline, dump

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
DOCKERIGNORE = ROOT / "deploy" / "Dockerfile.dockerignore"
UNIT = ROOT / "deploy" / "aibridge.service"
HEALTH = "curl -fsS --max-time 4 http://127.0.0.1:8080/healthz"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    result: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or (line.startswith("#") and not pending):
            continue
        if line.startswith("#"):  # a comment inside a continued instruction
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        word, _, args = (pending + line).partition(" ")
        result.append((word.upper(), args.strip()))
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    return result


def unit() -> dict[str, dict[str, list[str]]]:
    """Sections of the unit file; a key may repeat (systemd appends), so values are lists."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for raw in UNIT.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"key outside a section: {line}"
        key, sep, value = line.partition("=")
        assert sep, f"not a key=value line: {line}"
        current.setdefault(key, []).append(value)
    return sections


def docker_command() -> list[str]:
    by_name = dict(instructions())
    return json.loads(by_name["ENTRYPOINT"]) + json.loads(by_name["CMD"])


def test_dockerfile_base_user_ports_volumes_and_health():
    steps = instructions()
    names = [name for name, _ in steps]
    assert steps[0] == ("FROM", "python:3.13-slim")
    by_name = dict(steps)
    assert by_name["WORKDIR"] == "/opt/aibridge"
    assert by_name["USER"] == "aibridge"
    assert names.index("USER") < names.index("ENTRYPOINT")  # never runs as root
    assert by_name["EXPOSE"] == "8080"
    assert set(json.loads(by_name["VOLUME"])) == {"/etc/aibridge", "/var/lib/aibridge"}
    assert "AIBRIDGE_DATA_DIR=/var/lib/aibridge" in by_name["ENV"]
    assert HEALTH in by_name["HEALTHCHECK"]
    run = " ".join(args for name, args in steps if name == "RUN")
    assert "pip install -r requirements.lock" in run
    assert "pip install --no-deps ." in run
    assert "curl" in run  # the slim base image has no curl for the HEALTHCHECK


def test_copy_sources_exist_and_leave_secrets_out():
    ignored = [p for p in DOCKERIGNORE.read_text().splitlines() if p and not p.startswith("#")]
    for name, args in instructions():
        if name != "COPY":
            continue
        *sources, _dest = shlex.split(args)
        for source in sources:
            assert not source.startswith("--"), f"unexpected COPY flag in {args}"
            assert source not in (".", "./", "certs", "certs/"), f"COPY {source} takes too much"
            assert (ROOT / source).exists(), f"COPY source {source} does not exist"
            assert included(source.rstrip("/"), ignored), f"{source} is in the .dockerignore"
    assert not included("certs/mitmproxy-ca.pem", ignored)
    assert not included(".venv/bin/python", ignored)


def included(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching pattern wins, `!` re-includes."""
    keep = True
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.removeprefix("!").rstrip("/")
        if fnmatch.fnmatch(path, pattern) or fnmatch.fnmatch(path, pattern + "/*"):
            keep = negate
    return keep


def test_unit_file_keys():
    sections = unit()
    service = sections["Service"]
    one = {key: values[-1] for key, values in service.items()}
    assert one["User"] == "aibridge"
    assert one["WorkingDirectory"] == "/opt/aibridge"
    assert one["EnvironmentFile"] == "/etc/aibridge/env"
    assert "AIBRIDGE_DATA_DIR=/var/lib/aibridge" in service["Environment"]
    assert one["Restart"] == "on-failure"
    assert one["TimeoutStopSec"]
    for key, value in {"NoNewPrivileges": "yes", "ProtectSystem": "strict",
                       "PrivateTmp": "yes", "ProtectHome": "yes"}.items():
        assert one[key] == value, key
    writable = " ".join(service["ReadWritePaths"]).split()
    assert "/var/lib/aibridge" in writable
    assert sections["Install"]["WantedBy"] == ["multi-user.target"]


def test_service_and_image_run_the_same_command():
    exec_start = shlex.split(unit()["Service"]["ExecStart"][-1])
    assert exec_start[0] == "/opt/aibridge/.venv/bin/mitmdump"
    # Same arguments, whatever the order (the image keeps --mode last so it can be replaced).
    assert sorted(pairs(exec_start[1:])) == sorted(pairs(docker_command()[1:]))
    assert docker_command()[0] == exec_start[0]


def pairs(args: list[str]) -> list[str]:
    """Options with their values joined, so sorting keeps each value with its option."""
    out: list[str] = []
    it = iter(args)
    for arg in it:
        out.append(arg if arg == "-q" else f"{arg} {next(it)}")
    return out


@pytest.mark.parametrize("source", ["service", "image"])
async def test_mitmdump_accepts_the_command(source):
    args = (shlex.split(unit()["Service"]["ExecStart"][-1]) if source == "service"
            else docker_command())
    # mitmdump's own parser; its default addons declare options such as -s (scripts).
    opts = options.Options()
    dump.DumpMaster(opts, with_termlog=False, with_dumper=False)
    parsed = cmdline.mitmdump(opts).parse_args(args[1:])
    assert parsed.quiet
    assert parsed.scripts == ["/opt/aibridge/addon/bridge.py"]
    assert parsed.mode == ["regular@0.0.0.0:8080"]
    assert sorted(parsed.setoptions) == ["bridge_config=/etc/aibridge/aibridge.toml",
                                         "confdir=/etc/aibridge/certs"]
    assert (ROOT / "addon" / "bridge.py").exists()  # what /opt/aibridge/addon/bridge.py is


def test_systemd_analyze_verify(tmp_path):
    """`systemd-analyze verify` in a scratch root that has the system's units and a stand-in
    for the venv's mitmdump (it checks that ExecStart is executable)."""
    analyze = shutil.which("systemd-analyze")
    system_units = Path("/usr/lib/systemd/system")
    if analyze is None or not system_units.is_dir():
        pytest.skip("systemd-analyze or the system's units are not on this machine")
    mitmdump = tmp_path / "opt/aibridge/.venv/bin/mitmdump"
    mitmdump.parent.mkdir(parents=True)
    mitmdump.write_text("#!/bin/sh\n")
    mitmdump.chmod(0o755)
    shutil.copytree(system_units, tmp_path / "usr/lib/systemd/system", symlinks=True)
    (tmp_path / "etc/systemd/system").mkdir(parents=True)
    shutil.copy(UNIT, tmp_path / "etc/systemd/system/aibridge.service")
    result = subprocess.run([analyze, "verify", f"--root={tmp_path}", "aibridge.service"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr


def pins(name: str) -> dict[str, str]:
    found = {}
    for line in (ROOT / name).read_text().splitlines():
        if line and not line.startswith(("#", "-r")):
            package, _, version = line.partition("==")
            found[package.lower().replace("_", "-")] = version
    return found


def test_the_runtime_lock_pins_what_runs_and_no_development_tool():
    import tomllib

    from packaging.requirements import Requirement

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime, dev = pins("requirements.lock"), pins("requirements-dev.lock")
    wanted = [*project["dependencies"], *project["optional-dependencies"]["otlp"]]
    for spec in wanted:
        req = Requirement(spec)
        name = req.name.lower().replace("_", "-")
        assert name in runtime, f"{name} is not pinned in requirements.lock"
        assert req.specifier.contains(runtime[name]), f"{name}=={runtime[name]} vs {spec}"
    for spec in project["optional-dependencies"]["test"]:
        name = Requirement(spec).name.lower()
        assert name not in runtime, f"test tool {name} in the runtime lock"
        assert name in dev, f"test tool {name} is not pinned in requirements-dev.lock"
    assert not set(runtime) & set(dev), "a package pinned twice"
    assert (ROOT / "requirements-dev.lock").read_text().splitlines()[2] == "-r requirements.lock"
    assert "-r requirements-dev.lock" in (ROOT / "scripts" / "setup").read_text()
