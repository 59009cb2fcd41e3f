"""`[mcp]` in the configuration file: what is accepted, what is refused with a clear message."""

from __future__ import annotations

import pytest

from aibridge.config import ConfigError, load_config
from aibridge.settings import Settings


def write(tmp_path, text: str):
    path = tmp_path / "aibridge.toml"
    path.write_text(text)
    return path


def test_a_server_with_everything(tmp_path):
    config, _ = load_config(write(tmp_path, """
[mcp]
refresh_interval = 60
max_rounds = 3

[mcp.servers.docs]
url = "https://docs.internal/mcp"
headers_env = { Authorization = "DOCS_MCP_TOKEN" }
allow = ["search_.*"]
deny = ["search_admin"]
match = { team = "ml" }
call_timeout = 10
max_result_bytes = 2048
"""))
    docs = config.mcp.servers["docs"]
    assert docs.headers_env == {"Authorization": "DOCS_MCP_TOKEN"}
    assert (docs.allow, docs.deny, docs.match.team) == (["search_.*"], ["search_admin"], "ml")
    assert (config.mcp.refresh_interval, config.mcp.max_rounds) == (60, 3)


@pytest.mark.parametrize(("server", "message"), [
    ('url = "ftp://x"', "url must be an http"),
    ('url = "https://u:secret@x/mcp"', "must not carry credentials"),
    ('url = "https://x/mcp"\ndeny = ["("]', "is not a regular expression"),
    ('url = "https://x/mcp"\nheaders_env = { "Bad Header" = "X" }', "not an HTTP header token"),
    ('url = "https://x/mcp"\nheaders_env = { Authorization = "1X" }', "environment variable"),
    ('url = "https://x/mcp"\nheaders = { Authorization = "secret" }', "Extra inputs"),
])
def test_bad_servers_are_refused(tmp_path, server, message):
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, f"[mcp.servers.docs]\n{server}\n"))


@pytest.mark.parametrize("name", ["my_docs", "Docs", "a" * 25])
def test_server_names_keep_injected_names_readable(tmp_path, name):
    with pytest.raises(ConfigError, match="mcp server name"):
        load_config(write(tmp_path, f'[mcp.servers."{name}"]\nurl = "https://x/mcp"\n'))


def test_a_header_secret_missing_from_the_environment_stops_the_start(tmp_path, monkeypatch):
    monkeypatch.delenv("DOCS_MCP_TOKEN", raising=False)
    path = write(tmp_path, '[mcp.servers.docs]\nurl = "https://x/mcp"\n'
                           'headers_env = { Authorization = "DOCS_MCP_TOKEN" }\n')
    with pytest.raises(ConfigError, match="DOCS_MCP_TOKEN named by headers_env are not set"):
        Settings.load(str(path))
    monkeypatch.setenv("DOCS_MCP_TOKEN", "Bearer t")
    assert Settings.load(str(path)).config.mcp.servers["docs"].url == "https://x/mcp"
