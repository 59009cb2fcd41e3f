"""The PAC file, evaluated the way browsers do: its `FindProxyForURL` run by a JavaScript engine."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from aibridge.ops import cli, pac

# Loads the PAC text into a fresh context with the standard PAC helpers stubbed (as a browser
# provides them), then answers FindProxyForURL for each [url, host] pair.
NODE_EVALUATOR = r"""
const vm = require("vm");
const input = JSON.parse(require("fs").readFileSync(0, "utf8"));
const sandbox = {
  isPlainHostName: (h) => !h.includes("."),
  dnsDomainIs: (h, d) => h.endsWith(d),
  localHostOrDomainIs: (h, d) => h === d || d.startsWith(h + "."),
  isResolvable: () => true, isInNet: () => false, dnsResolve: () => "127.0.0.1",
  myIpAddress: () => "127.0.0.1", dnsDomainLevels: (h) => h.split(".").length - 1,
  shExpMatch: () => { throw new Error("shExpMatch must not be needed"); },
  weekdayRange: () => true, dateRange: () => true, timeRange: () => true,
};
vm.runInNewContext(input.pac, sandbox, { filename: "aibridge.pac" });
const answers = input.cases.map(([url, host]) => sandbox.FindProxyForURL(url, host));
process.stdout.write(JSON.stringify(answers));
"""

PROXY = "PROXY bridge.example.com:8080"


def find_proxy(pac_text: str, cases: list[tuple[str, str]]) -> list[str]:
    node = shutil.which("node")
    if node is None:  # never a skip: the PAC file would go out untested
        pytest.fail("node (Node.js) is not on PATH; it is needed to evaluate the PAC file's "
                    "FindProxyForURL. Install Node.js >= 18 (e.g. apt-get install nodejs).")
    result = subprocess.run([node, "-e", NODE_EVALUATOR], capture_output=True, text=True,
                            input=json.dumps({"pac": pac_text, "cases": cases}), timeout=30)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def case(url: str) -> tuple[str, str]:
    """[url, host] as a browser passes them: host without the port, case as in the URL."""
    authority = url.split("//", 1)[1].split("/", 1)[0]
    return url, authority.rsplit(":", 1)[0] if authority.count(":") == 1 else authority


EXPECTED = {
    "https://api.openai.com/v1/chat/completions": PROXY,
    "https://api.anthropic.com/v1/messages": PROXY,
    "https://API.OpenAI.com/v1/models": PROXY,
    "https://api.openai.com:443/v1/responses": PROXY,
    "https://api.anthropic.com.:8443/v1/messages": PROXY,  # fully qualified, with a port
    "https://api.groq.com/openai/v1/models": PROXY,
    "https://github.com/": "DIRECT",
    "https://chatgpt.com/": "DIRECT",  # disabled in the config below
    "https://openai.com/": "DIRECT",
    "https://api.openai.com.evil.net/v1/models": "DIRECT",
    "https://evilapi.openai.com/v1/models": "DIRECT",
    "https://xapi.anthropic.com/v1/messages": "DIRECT",
    "https://eu.api.openai.com/v1/models": "DIRECT",
    "http://localhost:8080/": "DIRECT",
    "https://[::1]:8443/": "DIRECT",
}

CONFIG = """
[providers.chatgpt]
enabled = false

[providers.groq]
type = "openai"
hosts = ["API.Groq.com"]
"""


def test_pac_from_the_config_routes_exactly_the_provider_hosts(tmp_path, capsys):
    config = tmp_path / "aibridge.toml"
    config.write_text(CONFIG)
    out = tmp_path / "aibridge.pac"
    assert cli.main(["pac", "--config", str(config), "--proxy", "bridge.example.com:8080",
                     "--out", str(out)]) == 0
    assert "api.anthropic.com, api.groq.com, api.openai.com" in capsys.readouterr().out
    cases = [case(url) for url in EXPECTED]
    assert dict(zip(EXPECTED, find_proxy(out.read_text(), cases), strict=True)) == EXPECTED
    # Engines that hand over "host:port" get the same answers.
    assert find_proxy(out.read_text(), [("https://x/", "API.openai.com:443"),
                                        ("https://x/", "evilapi.openai.com:443")]) \
        == [PROXY, "DIRECT"]


def test_default_providers_and_stdout(capsys):
    assert cli.main(["pac", "--proxy", "10.0.0.5:3128", "--out", "-"]) == 0
    text = capsys.readouterr().out
    assert find_proxy(text, [case("https://chatgpt.com/backend-api/codex/responses"),
                             case("https://ab.chatgpt.com/")]) == ["PROXY 10.0.0.5:3128", "DIRECT"]


def test_hosts_cannot_inject_javascript():
    evil = 'x"]; AIBRIDGE_HOSTS = ["github.com"]; //\u2028'
    text = pac.render(["api.openai.com", evil], "[::1]:8080")
    answers = find_proxy(text, [("https://github.com/", "github.com"),
                                ("https://api.openai.com/", "api.openai.com")])
    assert answers == ["DIRECT", "PROXY [::1]:8080"]


@pytest.mark.parametrize("proxy", ["bridge.example.com", "bridge:0", "bridge:70000",
                                   "bridge:8080; DIRECT", "http://bridge:8080", "a b:1", ""])
def test_bad_proxy_is_refused(proxy, capsys, tmp_path):
    out = tmp_path / "x.pac"
    assert cli.main(["pac", "--proxy", proxy, "--out", str(out)]) == 1
    assert "--proxy must be host:port" in capsys.readouterr().err
    assert not out.exists()


def test_bad_config_is_reported(tmp_path, capsys):
    config = tmp_path / "bad.toml"
    config.write_text('[providers.openai]\ncredentials = "centralised"\n')
    assert cli.main(["pac", "--config", str(config), "--proxy", "b:1", "--out", "-"]) == 1
    assert "providers.openai.credentials" in capsys.readouterr().err


def test_script_wrapper(tmp_path):
    root = Path(__file__).resolve().parents[2]
    out = tmp_path / "p.pac"
    subprocess.run([str(root / "scripts" / "pac"), "--proxy", "b:1", "--out", str(out)],
                   check=True, capture_output=True, timeout=60)
    assert "function FindProxyForURL(url, host)" in out.read_text()


def test_a_wildcard_host_matches_one_label_as_the_bridge_does():
    text = pac.render(["*.openai.azure.com", "api.openai.com"], "bridge.example.com:8080")
    urls = ["https://contoso.openai.azure.com/openai/v1/models",
            "https://Contoso.OpenAI.azure.com.:443/x",
            "https://openai.azure.com/", "https://a.b.openai.azure.com/",
            "https://contoso.openai.azure.com.evil.example/", "https://api.openai.com/v1"]
    assert find_proxy(text, [case(u) for u in urls]) == [
        PROXY, PROXY, "DIRECT", "DIRECT", "DIRECT", PROXY]
