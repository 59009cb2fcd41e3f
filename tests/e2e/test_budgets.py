"""Budgets through a real mitmdump with the real SDKs and Claude Code: a spent budget refuses
its actor's next request with 403 (every route, both envelopes, WebSocket frames) while others
keep working; the spend survives a restart; a burst of concurrent requests cannot overshoot;
warnings reach a webhook; a reload applies new limits and prices and keeps the spend; and
`aibridge budgets` reports it all from the records.

Prices: `fake-*` models cost $1000 per million output tokens and nothing for input, so each
fake answer (7 output tokens) costs exactly $0.007, and a request asking for `max_tokens = 7`
reserves exactly that.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import anthropic
import openai
import pytest

from tests.e2e.harness import ALICE_TOKEN, BOB_TOKEN, ROOT, provider_config
from tests.fakeprovider import Reply

pytestmark = pytest.mark.filterwarnings(
    "ignore:connect\\(\\) must be used as a context manager:DeprecationWarning")

AGENTS = ROOT / "tools" / "agents" / "node_modules" / ".bin"
MESSAGES = [{"role": "user", "content": "hi"}]
PRICES = """
[prices."fake-*"]
input = 0
output = 1000
cache_read = 0
cache_write = 0
"""
BUDGETS = PRICES + """
[[budgets]]
name = "alice-daily"
match = { actor = "alice" }
period = "day"
limit_usd = 0.02
warn_at = [0.5]

[[budgets]]
name = "burst"
match = { actor = "bob" }
model = "fake-burst*"
period = "month"
limit_usd = 0.035

[budgets_settings]
webhook_url = "http://127.0.0.1:{port}/hook/secret-token"
"""
SPENT = re.compile(r'budget "alice-daily" is spent: \$0\.021 of \$0\.02 today; resets '
                   r"(\d{4}-\d\d-\d\dT00:00:00Z)")


class Hook(BaseHTTPRequestHandler):
    """The webhook receiver: answers 500 to the first POST (the bridge retries), then 204."""

    received: list[dict] = []
    attempts = 0

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).attempts += 1
        if type(self).attempts == 1:
            self.send_response(500)
        else:
            type(self).received.append({"path": self.path, **json.loads(body)})
            self.send_response(204)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def hook():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()


@pytest.fixture(scope="module")
def budgeted(fake, make_bridge, hook):
    return make_bridge(provider_config(fake.url,
                                       extra=BUDGETS.replace("{port}", str(hook.server_port))))


def spend_alice(bridge) -> openai.PermissionDeniedError:
    """Alice's requests until her budget refuses one (each costs $0.007 of $0.02)."""
    client = bridge.openai()
    for _ in range(10):
        try:
            client.chat.completions.create(model="fake-model", messages=MESSAGES, max_tokens=7)
        except openai.PermissionDeniedError as e:
            return e
    raise AssertionError("the budget never refused")


def wait_for_notice(event: str, timeout: float = 20.0) -> None:
    """Until the webhook receiver got `event` (it arrives off the request path)."""
    deadline = time.monotonic() + timeout
    while not any(h["event"] == event for h in Hook.received):
        assert time.monotonic() < deadline, Hook.received
        time.sleep(0.05)


def tomorrow() -> str:
    return f"{(datetime.now(UTC) + timedelta(days=1)):%Y-%m-%d}T00:00:00Z"


def test_a_spent_budget_stops_its_actor_while_another_keeps_working(budgeted, fake, hook):
    refused = spend_alice(budgeted)
    assert len([r for r in fake.requests if r.path == "/v1/chat/completions"]) == 3
    assert refused.status_code == 403
    assert refused.body["type"] == "permission_error"
    assert refused.body["code"] == "budget_exceeded"
    match = SPENT.fullmatch(refused.body["message"])
    assert match and match.group(1) == tomorrow(), refused.body["message"]
    assert refused.response.headers["x-should-retry"] == "false"
    # Every route, in its own envelope: Anthropic's SDK gets its shape.
    with pytest.raises(anthropic.PermissionDeniedError) as native:
        budgeted.anthropic().messages.create(model="fake-claude", max_tokens=7,
                                             messages=MESSAGES)
    assert native.value.body["type"] == "error"
    assert native.value.body["error"]["code"] == "budget_exceeded"
    assert SPENT.fullmatch(native.value.body["error"]["message"])
    with pytest.raises(openai.PermissionDeniedError):
        budgeted.openai().responses.create(model="fake-model", input="hi")
    # Bob has no budget on these models.
    bob = budgeted.openai(token=BOB_TOKEN)
    assert bob.chat.completions.create(model="fake-model", messages=MESSAGES).choices
    budgeted.wait_for_log(r"budget \"alice-daily\" \(actor=alice\) crossed 50%: \$0\.014 of")
    budgeted.wait_for_log(r"budget \"alice-daily\" \(actor=alice\) is spent: \$0\.021 of")
    # The webhook: refused once (500), retried, then both notices, in order.
    wait_for_notice("budget.spent")
    assert [(h["event"], h["budget"], h["actor"]) for h in Hook.received] == [
        ("budget.warning", "alice-daily", "alice"), ("budget.spent", "alice-daily", "alice")]
    assert Hook.received[0]["share"] == 0.5 and Hook.received[0]["spent_usd"] == "0.014"
    assert Hook.received[0]["path"] == "/hook/secret-token"
    assert Hook.attempts == 3
    assert "secret-token" not in budgeted.log()  # the URL's path is never logged


def test_a_websocket_response_create_is_refused_with_an_error_frame(budgeted, fake):
    spend_alice(budgeted)
    client = budgeted.openai()
    with client.responses.connect(websocket_connection_options={
            "ssl": budgeted.ssl_context(), "proxy": budgeted.proxy_url(),
            "open_timeout": 10}) as conn:
        conn.response.create(model="fake-model", input="hi")
        event = next(iter(conn))
    assert event.type == "error"
    assert event.error.code == "budget_exceeded" and event.error.type == "permission_error"
    assert SPENT.fullmatch(event.error.message)
    assert fake.ws_frames == []  # dropped: the provider never saw it


def test_the_spend_survives_a_restart(budgeted, fake, hook):
    spend_alice(budgeted)
    wait_for_notice("budget.spent")
    warned = len(Hook.received)
    fake.clear()
    budgeted.stop()
    budgeted.start()
    with pytest.raises(openai.PermissionDeniedError) as refused:
        budgeted.openai().chat.completions.create(model="fake-model", messages=MESSAGES,
                                                  max_tokens=7)
    assert SPENT.fullmatch(refused.value.body["message"]), refused.value.body["message"]
    assert [r for r in fake.requests if r.path == "/v1/chat/completions"] == []
    assert len(Hook.received) == warned  # no second warning for the same period


def test_claude_code_prints_the_bridge_message_and_does_not_retry(budgeted, fake, tmp_path):
    assert (AGENTS / "claude").exists(), "claude missing: run scripts/setup (install-agents)"
    spend_alice(budgeted)
    home = tmp_path / "home"
    home.mkdir()
    started = time.monotonic()
    result = subprocess.run(
        [str(AGENTS / "claude"), "-p", "say hi", "--max-turns", "1", "--model",
         "claude-sonnet-5"],
        env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": str(home),
             "CLAUDE_CONFIG_DIR": str(home / ".claude"), "HTTPS_PROXY": budgeted.proxy_url(),
             "NODE_EXTRA_CA_CERTS": budgeted.ca, "ANTHROPIC_API_KEY": ALICE_TOKEN,
             "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1", "DISABLE_AUTOUPDATER": "1",
             "DISABLE_TELEMETRY": "1", "DISABLE_ERROR_REPORTING": "1"},
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    took = time.monotonic() - started
    output = result.stdout + result.stderr
    assert 'budget "alice-daily" is spent: $0.021 of $0.02 today' in output, output
    assert result.returncode != 0
    assert [r for r in fake.requests if r.path.startswith("/v1/messages")] == []
    refusals = re.findall(r"rejected POST /v1/messages\S* from alice: 403", budgeted.log())
    # Claude Code retries 403s... unless told not to: one refusal per request it made (it may
    # ask once more for its own purposes), never a retry loop with back-off.
    assert 1 <= len(refusals) <= 2, refusals
    assert took < 60, took


def test_concurrent_requests_cannot_overshoot_the_budget(budgeted, fake):
    """20 at once against a budget that fits 5: the reservations of the first 5 fill it, so
    the other 15 are refused while those are in flight (the fake holds each for a second)."""
    body = {"id": "chatcmpl-burst", "object": "chat.completion", "created": 1,
            "model": "fake-burst", "choices": [{"index": 0, "finish_reason": "stop",
                                                "message": {"role": "assistant",
                                                            "content": "ok"}}],
            "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}}
    for _ in range(20):
        fake.enqueue(Reply(body=body, delay=1.0), path="/v1/chat/completions")

    async def burst() -> list[object]:
        client = budgeted.async_openai(token=BOB_TOKEN)
        calls = [client.chat.completions.create(model="fake-burst", messages=MESSAGES,
                                                max_tokens=7) for _ in range(20)]
        results = await asyncio.gather(*calls, return_exceptions=True)
        await client.close()
        return results

    results = asyncio.run(burst())
    ok = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, openai.PermissionDeniedError)]
    reached = [r for r in fake.requests if r.path == "/v1/chat/completions"]
    assert len(ok) + len(refused) == 20, [r for r in results if r not in ok + refused]
    assert len(reached) == len(ok) == 5
    assert all(r.body["code"] == "budget_exceeded" for r in refused)
    # Each settled at its recorded cost: exactly the limit, nothing over.
    with pytest.raises(openai.PermissionDeniedError) as after:
        budgeted.openai(token=BOB_TOKEN).chat.completions.create(
            model="fake-burst", messages=MESSAGES, max_tokens=7)
    assert 'budget "burst" is spent: $0.035 of $0.035 this month' in after.value.message


def test_the_report_shows_each_budget_and_its_spend(budgeted):
    spend_alice(budgeted)
    time.sleep(0.5)  # the recorder writes in batches of at most 0.2 s
    result = subprocess.run(
        [sys.executable, "-m", "aibridge.ops.cli", "budgets", "--config",
         str(budgeted.config_path), "--format", "json"],
        capture_output=True, text=True, timeout=60,
        env={"PATH": "/usr/bin:/bin", "AIBRIDGE_DATA_DIR": str(budgeted.workdir / "data")})
    assert result.returncode == 0, result.stderr
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    alice = rows["alice-daily"]
    assert alice["kind"] == "budget" and alice["spent_usd"] == "0.021"
    assert alice["limit_usd"] == "0.02" and alice["share"] == 1.05
    assert alice["resets_at"] == tomorrow()
    table = subprocess.run(
        [sys.executable, "-m", "aibridge.ops.cli", "budgets", "--config",
         str(budgeted.config_path)], capture_output=True, text=True, timeout=60,
        env={"PATH": "/usr/bin:/bin", "AIBRIDGE_DATA_DIR": str(budgeted.workdir / "data")})
    assert table.returncode == 0, table.stderr
    assert re.search(r"alice-daily\s+budget\s+actor=alice\s+day\s+\$0\.021\s+\$0\.02\s+105%",
                     table.stdout), table.stdout


def test_a_reload_applies_new_limits_and_prices_and_keeps_the_spend(fake, make_bridge):
    config = PRICES + """
[[budgets]]
name = "carry"
match = { actor = "alice" }
limit_usd = 0.02
"""
    bridge = make_bridge(provider_config(fake.url, extra=config))
    refused = spend_alice(bridge)
    assert 'budget "carry" is spent: $0.021 of $0.02 this month' in refused.message
    # A higher limit and a dearer model: alice may spend again, from where she was.
    bridge.config_path.write_text(provider_config(fake.url, extra=config.replace(
        "limit_usd = 0.02", "limit_usd = 0.04").replace("output = 1000", "output = 2000")))
    bridge.wait_for_log("configuration reloaded")
    client = bridge.openai()
    admitted = 0
    for _ in range(5):
        try:
            client.chat.completions.create(model="fake-model", messages=MESSAGES, max_tokens=7)
            admitted += 1
        except openai.PermissionDeniedError as e:
            refused = e
            break
    # From $0.021 at $0.014 a request: two more (had the spend been forgotten: three), and
    # the refusal counts all of it.
    assert admitted == 2
    assert 'budget "carry" is spent: $0.049 of $0.04 this month' in refused.message
