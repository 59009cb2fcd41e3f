"""Configuration addon, in-process: a broken settings file at start is an `OptionsError` saying
`aibridge: …`; a broken file on reload is rejected and the running settings stay; a good one
applies (by hand and through the file watcher)."""

from __future__ import annotations

import asyncio

import pytest
from mitmproxy import exceptions
from mitmproxy.addons.proxyserver import Proxyserver
from mitmproxy.test import taddons

from aibridge.addons.chain import chain
from aibridge.addons.configuration import Configuration
from aibridge.addons.runtime import Runtime
from tests.unit.conftest import ACTORS, BASE_CONFIG, TOKEN, connect_flow

BROKEN = {  # name: (file, what the error names)
    "not TOML": ("[auth\nactors_file = ", "not valid TOML"),
    "unknown key": ("no_such_setting = 1\n" + BASE_CONFIG, "no_such_setting"),
    "bad value": ("max_body_bytes = -1\n" + BASE_CONFIG, "max_body_bytes"),
    "missing actors file": (BASE_CONFIG.replace("actors.toml", "nowhere.toml"), "nowhere.toml"),
}


@pytest.mark.parametrize(("text", "problem"), BROKEN.values(), ids=BROKEN.keys())
async def test_a_broken_config_at_start_is_an_options_error(tmp_path, monkeypatch, text,
                                                            problem):
    monkeypatch.setenv("AIBRIDGE_DATA_DIR", str(tmp_path))
    (tmp_path / "actors.toml").write_text(ACTORS)
    (tmp_path / "aibridge.toml").write_text(text)
    runtime = Runtime()
    addons = chain(runtime)
    with taddons.context(*addons) as tctx:
        # mitmproxy rolls a rejected option back and configures again with the old value
        # (None here, no actors): on loopback that passes, so the error raised is ours. (On
        # mitmproxy's default shared address the rollback itself would raise the open-proxy
        # refusal instead; at a real start-up `startup.refusing` exits before any rollback.)
        tctx.options.listen_host = "127.0.0.1"
        with pytest.raises(exceptions.OptionsError) as raised:
            tctx.configure(addons[0], bridge_config=str(tmp_path / "aibridge.toml"))
        assert str(raised.value).startswith("aibridge: ")
        assert problem in str(raised.value)
        assert tctx.options.bridge_config is None  # rolled back
    assert runtime.settings.config_path is None  # the broken file never applied


async def test_an_open_proxy_is_refused_at_start(tmp_path, monkeypatch):
    monkeypatch.setenv("AIBRIDGE_DATA_DIR", str(tmp_path))
    (tmp_path / "aibridge.toml").write_text("[recording]\nenabled = false\n")
    addons = chain(Runtime())
    with taddons.context(*addons) as tctx, pytest.raises(
            exceptions.OptionsError, match=r"^aibridge: refusing to run an open proxy"):
        tctx.configure(addons[0], bridge_config=str(tmp_path / "aibridge.toml"))


async def test_a_good_config_applies_settings_and_pipelines(bridge):
    settings = bridge.runtime.settings
    assert settings.actors.requires_auth
    assert str(settings.registry.for_host("api.openai.com").upstream).startswith(
        "http://127.0.0.1:9")
    assert bridge.runtime.pipelines is not None


@pytest.mark.parametrize("target", ["config", "actors"])
async def test_reload_with_a_broken_file_returns_false_and_keeps_the_settings(bridge, target):
    before, pipelines = bridge.runtime.settings, bridge.runtime.pipelines
    path = bridge.config if target == "config" else bridge.config.parent / "actors.toml"
    path.write_text("[[broken")
    assert bridge.addon(Configuration).reload() is False
    assert bridge.runtime.settings is before and bridge.runtime.pipelines is pipelines
    await bridge.tunnel("api.openai.com")  # the old actors still authenticate


async def test_reload_with_a_good_file_applies_it_and_keeps_the_breakers(bridge):
    before = bridge.runtime.settings
    (bridge.config.parent / "actors.toml").write_text(
        '[[actors]]\nid = "bob"\ntoken = "bob-token-456"\n')
    assert bridge.addon(Configuration).reload() is True
    assert bridge.runtime.settings is not before
    assert bridge.runtime.settings.breakers is before.breakers
    assert (await bridge.tunnel("api.openai.com", token="bob-token-456")) is not None
    refused = connect_flow("api.openai.com", token=TOKEN)
    await bridge.hook("http_connect", refused)
    assert refused.response is not None and refused.response.status_code == 407


async def test_the_file_watcher_reloads_a_changed_file(bridge):
    configuration = bridge.addon(Configuration)
    configuration.reload_interval = 0.02
    before = bridge.runtime.settings
    configuration.running()
    try:
        await asyncio.sleep(0.05)  # the watcher takes its first fingerprint
        bridge.config.write_text("max_body_bytes = 1234\n" + BASE_CONFIG)
        for _ in range(100):
            if bridge.runtime.settings is not before:
                break
            await asyncio.sleep(0.02)
        assert bridge.runtime.settings.config.max_body_bytes == 1234
    finally:
        await configuration.done()
    await asyncio.sleep(0)
    assert configuration._watcher.cancelled()  # done() stops watching


async def test_connection_strategy_is_forced_to_lazy(make_bridge):
    proxyserver = Proxyserver()
    bridge = make_bridge(extra_addons=[proxyserver])
    bridge.tctx.configure(proxyserver, connection_strategy="eager")
    assert bridge.tctx.options.connection_strategy == "lazy"


async def test_a_rejected_option_change_keeps_the_running_settings(bridge, tmp_path):
    before = bridge.runtime.settings
    breakers = before.breakers
    for _ in range(breakers.settings.failure_threshold):
        breakers.record(breakers.admit("openai", "/v1/chat/completions", "gpt-4o"), failure=True)
    (tmp_path / "broken.toml").write_text("[[broken")
    with pytest.raises(exceptions.OptionsError, match="not valid TOML"):
        bridge.tctx.configure(bridge.addons[0], bridge_config=str(tmp_path / "broken.toml"))
    assert bridge.runtime.settings.breakers.state(
        "openai", "/v1/chat/completions", "gpt-4o").value == "open"
    assert bridge.runtime.settings is before
