"""Hot reload: changed config, actors and keys files apply without a restart; a bad file is
rejected with a log line and the previous settings stay."""

from __future__ import annotations

import time

import openai
import pytest

from tests.e2e.harness import ACTORS_TOML, BridgeProcess, provider_config

CAROL = "carol-proxy-token-0000"
MESSAGES = [{"role": "user", "content": "hi"}]


def eventually(check, timeout: float = 15.0):
    deadline = time.monotonic() + timeout
    while True:
        try:
            return check()
        except (AssertionError, openai.APIConnectionError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@pytest.fixture
def reloadable(fake, tmp_path):
    (tmp_path / "actors.toml").write_text(ACTORS_TOML)
    (tmp_path / "openai-keys.txt").write_text("sk-file-key-one-1111111111\n")
    config = provider_config(fake.url).replace(
        "[providers.openai]\n",
        '[providers.openai]\nkeys_env = "NO_SUCH_KEYS_ENV"\nkeys_file = "openai-keys.txt"\n')
    bridge = BridgeProcess(tmp_path, config).start()
    yield bridge
    bridge.stop()


def test_new_actor_works_without_restart(reloadable, fake):
    with pytest.raises(openai.APIConnectionError):
        reloadable.openai(token=CAROL).models.list()
    (reloadable.workdir / "actors.toml").write_text(
        ACTORS_TOML + f'\n[[actors]]\nid = "carol"\ntoken = "{CAROL}"\n')
    eventually(lambda: reloadable.openai(token=CAROL).models.list())
    assert fake.requests[-1].header("X-AI-Bridge-Actor-ID") == "carol"
    assert "aibridge: configuration reloaded" in reloadable.log()


def test_changed_keys_file_is_used_for_new_requests(reloadable, fake):
    client = reloadable.openai()
    client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert fake.requests[-1].header("Authorization") == "Bearer sk-file-key-one-1111111111"
    (reloadable.workdir / "openai-keys.txt").write_text("sk-file-key-two-2222222222\n")

    def uses_new_key():
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
        assert fake.requests[-1].header("Authorization") == "Bearer sk-file-key-two-2222222222"
    eventually(uses_new_key)


def test_invalid_config_is_rejected_and_the_old_settings_stay(reloadable, fake):
    reloadable.config_path.write_text("[providers.openai\nbroken = ")
    reloadable.wait_for_log(r"reload rejected, keeping the current settings: .*not valid TOML")
    reply = reloadable.openai().chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert reply.choices[0].message.content == "Hello from fake"


def test_auto_credentials_without_central_keys_is_a_startup_warning(fake, make_bridge):
    """`credentials = "auto"` with no keys starts (users may bring their own), but says so: a
    client that sends its proxy token as the key would otherwise meet a bare 401."""
    bridge = make_bridge(provider_config(fake.url), env={"AIBRIDGE_ANTHROPIC_KEYS": ""})
    bridge.stop()
    warned = [line for line in bridge.log().splitlines() if "no central keys, so" in line]
    assert len(warned) == 1 and "provider anthropic" in warned[0], bridge.log_tail()
    assert "openai" not in warned[0]  # openai has its keys
