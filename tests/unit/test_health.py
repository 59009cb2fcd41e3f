"""The open-proxy guard and the health document."""

import pytest
from mitmproxy import exceptions, hooks
from mitmproxy.test import taddons

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
