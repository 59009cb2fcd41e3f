"""The open-proxy guard and the health document."""

import pytest
from mitmproxy import exceptions, hooks
from mitmproxy.test import taddons, tutils

from aibridge.addons.configuration import Configuration
from aibridge.addons.health import Health
from aibridge.addons.runtime import Runtime
from aibridge.observe import health


@pytest.mark.parametrize(("modes", "listen_host", "problem"), [
    (["regular@127.0.0.1:8080"], "", False),
    (["regular"], "127.0.0.1", False),
    (["regular"], "localhost", False),
    (["regular"], "", True),  # mitmproxy's default: every interface
    (["regular@0.0.0.0:8080"], "127.0.0.1", True),
    (["regular@10.1.2.3:8080"], "", True),
    (["regular@127.0.0.1:8080", "regular@[::]:8081"], "", True),
])
def test_open_proxy_problem(modes, listen_host, problem):
    addresses = health.listen_addresses(modes, listen_host, 8080)
    message = health.open_proxy_problem(addresses)
    assert (message is not None) is problem
    if problem:
        assert "actors_file" in message and "allow_open_proxy" in message


def configure(tctx, addon, **options):
    tctx.options.update(**options)
    tctx.master.addons.invoke_addon_sync(addon, hooks.ConfigureHook(set(tctx.options.keys())))


def test_bridge_refuses_a_shared_listen_address_without_actors(tmp_path, monkeypatch):
    monkeypatch.setenv("AIBRIDGE_DATA_DIR", str(tmp_path))
    runtime = Runtime()
    cfg = Configuration(runtime)
    health_addon = Health(runtime)
    with taddons.context(cfg, health_addon) as tctx, pytest.raises(
            exceptions.OptionsError, match="refusing to run an open proxy"):
        configure(tctx, cfg, mode=["regular@0.0.0.0:8080"])


def test_allow_open_proxy_or_actors_lift_the_guard(tmp_path, monkeypatch):
    monkeypatch.setenv("AIBRIDGE_DATA_DIR", str(tmp_path))
    config = tmp_path / "aibridge.toml"
    config.write_text("[auth]\nallow_open_proxy = true\n[recording]\nenabled = false\n")
    runtime = Runtime()
    cfg = Configuration(runtime)
    health_addon = Health(runtime)
    with taddons.context(cfg, health_addon) as tctx:
        configure(tctx, cfg, mode=["regular@0.0.0.0:8080"], bridge_config=str(config))
        assert runtime.settings_or_none is not None
    (tmp_path / "actors.toml").write_text('[[actors]]\nid = "a"\ntoken = "t"\n')
    config.write_text('[auth]\nactors_file = "actors.toml"\n[recording]\nenabled = false\n')
    runtime = Runtime()
    cfg = Configuration(runtime)
    health_addon = Health(runtime)
    with taddons.context(cfg, health_addon) as tctx:
        configure(tctx, cfg, mode=["regular@0.0.0.0:8080"], bridge_config=str(config))
        assert runtime.settings.actors.requires_auth


# -- the probe endpoint's pure parts -------------------------------------------------------------


@pytest.mark.parametrize(("first", "direct"), [
    (b"GET /healthz HTTP/1.1\r\nHost: 10.0.0.5:8080\r\n\r\n", True),
    (b"HEAD /livez HTTP/1.0\r\n\r\n", True),
    (b"GET /", True),  # the rest of the line may come later
    (b"GET http://aibridge.health/healthz HTTP/1.1\r\n", False),
    (b"CONNECT api.openai.com:443 HTTP/1.1\r\n", False),
    (b"\x16\x03\x01\x00\xa5", False),  # TLS
    (b"PRI * HTTP/2.0\r\n", False),
    (b"", False),
    (b"G", False),
])
def test_starts_origin_form(first, direct):
    assert health.starts_origin_form(first) is direct


@pytest.mark.parametrize(("method", "path", "probe"), [
    ("GET", "/healthz", "/healthz"),
    ("GET", "/healthz?x=1", "/healthz"),
    ("HEAD", "/readyz", "/readyz"),
    ("get", "/livez", "/livez"),
    ("POST", "/healthz", None),
    ("GET", "/healthz/", None),
    ("GET", "/", None),
    ("GET", "/v1/chat/completions", None),
])
def test_probe_path(method, path, probe):
    request = tutils.treq(method=method.encode(), path=path.encode())
    assert health.probe_path(request) == probe


class FakeRecorder:
    def __init__(self, reachable: bool, spooled: int) -> None:
        self.database_reachable, self.spooled = reachable, spooled

    def stats(self) -> dict:
        return {"database": "postgresql://u:***@db.internal/x", "spool_path": "/var/x.jsonl"}


def test_problems_name_an_unreachable_database_without_its_address():
    found = health.problems(configured=True, shim_problems=[],
                            recorder=FakeRecorder(False, 12))
    assert found == ["recording database unreachable: 12 record(s) spooled, "
                     "written once it is back"]
    assert health.problems(configured=True, shim_problems=[],
                           recorder=FakeRecorder(True, 12)) == []  # catching up: ready
    assert health.problems(configured=False, shim_problems=["x"], recorder=None) == [
        "x", "not configured"]


def test_the_public_document_holds_counts_only():
    doc = health.public_document(problems=["p"], providers=[], breakers=None,
                                 recorder=FakeRecorder(False, 3))
    assert doc["ready"] is False and doc["recording"] == {"database_reachable": False,
                                                          "spooled": 3}
    assert "db.internal" not in str(doc) and "/var/x.jsonl" not in str(doc)


def test_a_recorder_on_a_working_database_is_reachable(tmp_path):
    from aibridge.recording.recorder import Recorder
    with Recorder(f"sqlite:///{tmp_path / 'r.db'}") as recorder:
        assert recorder.database_reachable is True
