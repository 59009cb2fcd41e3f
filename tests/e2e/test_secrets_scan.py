"""Secret scanning through a real mitmdump: what agents send is scanned on every wire API and
transport; secrets are logged, redacted or refused as configured; nothing the bridge keeps
(records, saved flows, its log) holds one afterwards."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import sqlite3
import subprocess

import anthropic
import openai
import pytest
from mitmproxy import io

from tests.e2e.harness import ROOT, provider_config
from tests.fakeprovider import Reply, WsReply, responses_events

pytestmark = pytest.mark.filterwarnings(
    "ignore:connect\\(\\) must be used as a context manager:DeprecationWarning")

AIBRIDGE = str(ROOT / ".venv" / "bin" / "aibridge")
SALT = "test-salt-0123456789"
CAROL_TOKEN = "carol-proxy-token-9012"
DAVE_TOKEN = "dave-proxy-token-3456"
ALICE_TOKEN, BOB_TOKEN = "alice-proxy-token-1234", "bob-proxy-token-5678"
ACTORS = f"""
[[actors]]
id = "alice"
token = "{ALICE_TOKEN}"
metadata = {{ Team = "ml" }}

[[actors]]
id = "bob"
token = "{BOB_TOKEN}"

[[actors]]
id = "carol"
token = "{CAROL_TOKEN}"
metadata = {{ Team = "sec" }}

[[actors]]
id = "dave"
token = "{DAVE_TOKEN}"
"""
SECRETS = """
[secrets]
action = "redact"
allow = ["^AKIATESTONLY"]
salt_env = "AIBRIDGE_TEST_SALT"

[[secrets.rules]]
id = "acme-token"
regex = "acme_[a-z0-9]{24}"
keyword = "acme_"

[[secrets.overrides]]
match = { actor = "bob" }
action = "log"

[[secrets.overrides]]
match = { team = "sec" }
action = "block"

[[secrets.overrides]]
match = { actor = "dave" }
action = "off"
"""

AWS_KEY_ID = "AKIAZ7Q3XWERTYUIOPLK"
AWS_SECRET = "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"
ENV_FILE = (f"REGION=eu-west-1\naws_access_key_id = {AWS_KEY_ID}\n"
            f"aws_secret_access_key = {AWS_SECRET}\n")
USED: set[str] = set()  # every secret sent in this module: none may stay in what is kept

TOKENS = {"alice": ALICE_TOKEN, "bob": BOB_TOKEN, "carol": CAROL_TOKEN, "dave": DAVE_TOKEN}
ACTIONS = {"alice": "redact", "bob": "log", "carol": "block", "dave": "off"}


def expected(rule: str, secret: str) -> str:
    """The placeholder, computed the way the README says: HMAC-SHA256 of the secret under a
    key derived from the salt; six hex digits."""
    key = hashlib.sha256(b"aibridge secrets placeholders\0" + SALT.encode()).digest()
    return f"[REDACTED {rule} #{hmac.new(key, secret.encode(), hashlib.sha256).hexdigest()[:6]}]"


@pytest.fixture(scope="module")
def bridge(fake, make_bridge):
    return make_bridge(provider_config(fake.url, extra=SECRETS), actors=ACTORS,
                       env={"AIBRIDGE_TEST_SALT": SALT})


# -- one request per wire API, carrying a file with AWS credentials in a tool result ----------


def messages_request(bridge, actor: str, file: str = ENV_FILE, **kw):
    return bridge.anthropic(token=TOKENS[actor], api_key=TOKENS[actor]).messages.create(
        model="claude-sonnet-5", max_tokens=64, messages=[
            {"role": "user", "content": "what is in .env?"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_01",
                                               "name": "Read", "input": {"path": ".env"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_01",
                                          "content": file}]}], **kw)


def chat_request(bridge, actor: str, file: str = ENV_FILE, **kw):
    return bridge.openai(token=TOKENS[actor]).chat.completions.create(
        model="gpt-4o", messages=[
            {"role": "user", "content": "what is in .env?"},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_01", "type": "function",
                 "function": {"name": "read", "arguments": '{"path":".env"}'}}]},
            {"role": "tool", "tool_call_id": "call_01", "content": file}], **kw)


def responses_input(file: str = ENV_FILE) -> list:
    return [{"role": "user", "content": "what is in .env?"},
            {"type": "function_call", "call_id": "call_01", "name": "read",
             "arguments": '{"path":".env"}'},
            {"type": "function_call_output", "call_id": "call_01", "output": file}]


def responses_request(bridge, actor: str, file: str = ENV_FILE, **kw):
    return bridge.openai(token=TOKENS[actor]).responses.create(
        model="gpt-5", input=responses_input(file), **kw)


def websocket_request(bridge, actor: str, file: str = ENV_FILE) -> list:
    client = bridge.openai(token=TOKENS[actor])
    with client.responses.connect(websocket_connection_options={
            "ssl": bridge.ssl_context(), "proxy": bridge.proxy_url(TOKENS[actor]),
            "open_timeout": 10}) as conn:
        conn.response.create(model="gpt-5", input=responses_input(file))
        events = []
        for event in conn:
            events.append(event)
            if event.type in ("response.completed", "response.failed", "error"):
                return events
    return events


WHERE = {"messages": "tool result of call toolu_01 in message 2",
         "chat": "tool result of call call_01 in message 2",
         "responses": "tool result of call call_01 in input item 2",
         "websocket": "tool result of call call_01 in input item 2"}
SEND = {"messages": messages_request, "chat": chat_request, "responses": responses_request,
        "websocket": websocket_request}


def sent(fake, api: str) -> str:
    """What the provider received for the last request of `api`."""
    if api == "websocket":
        return json.dumps(fake.ws_frames[-1])
    return fake.requests[-1].body.decode()


@pytest.mark.parametrize("api", ["messages", "chat", "responses", "websocket"])
@pytest.mark.parametrize("actor", ["alice", "bob", "carol", "dave"])
def test_each_action_on_each_api(bridge, fake, api, actor):
    USED.update((AWS_KEY_ID, AWS_SECRET))
    action = ACTIONS[actor]
    if action == "block":
        if api == "websocket":
            events = websocket_request(bridge, actor)
            assert events[-1].type == "error"
            message = events[-1].error.message
        else:
            with pytest.raises((anthropic.BadRequestError, openai.BadRequestError)) as caught:
                SEND[api](bridge, actor)
            error = caught.value
            assert error.status_code == 400
            assert error.response.headers["x-should-retry"] == "false"
            message = error.message
            if api != "messages":
                assert error.code == "secret_detected"
        assert f"secret detected: aws-access-key in {WHERE[api]}" in message
        assert AWS_KEY_ID not in message and AWS_SECRET not in message
        assert not fake.requests or fake.requests[-1].method == "GET"  # nothing was sent
        assert not fake.ws_frames
        return
    answer = SEND[api](bridge, actor)
    if api == "websocket":
        assert answer[-1].type == "response.completed"
    body = sent(fake, api)
    if action == "redact":
        assert AWS_KEY_ID not in body and AWS_SECRET not in body
        assert expected("aws-access-key", AWS_KEY_ID) in body
        assert expected("aws-secret-key", AWS_SECRET) in body
        if api != "websocket":  # valid JSON of the right length (the fake reads both)
            assert int(fake.requests[-1].header("content-length")) == len(
                fake.requests[-1].body)
    else:  # log, off: as sent
        assert AWS_KEY_ID in body and AWS_SECRET in body
        assert "REDACTED" not in body


def test_log_mode_sends_as_is_and_keeps_only_placeholders(bridge, fake):
    USED.add(AWS_KEY_ID)
    bridge.anthropic(token=BOB_TOKEN, api_key=BOB_TOKEN).messages.create(
        model="claude-sonnet-5", max_tokens=8,
        messages=[{"role": "user", "content": f"deploy with {AWS_KEY_ID} please"}])
    assert AWS_KEY_ID in fake.requests[-1].body.decode()  # sent as it was
    # (test_zz checks the recorded prompt and the kept flow hold the placeholder instead)


def test_placeholder_is_the_same_in_every_turn(bridge, fake):
    USED.add(AWS_KEY_ID)
    turn = [{"role": "user", "content": f"my key is {AWS_KEY_ID}"}]
    client = bridge.anthropic()
    client.messages.create(model="claude-sonnet-5", max_tokens=8, messages=turn)
    turn += [{"role": "assistant", "content": "noted"}, {"role": "user", "content": "and?"}]
    client.messages.create(model="claude-sonnet-5", max_tokens=8, messages=turn)
    first, second = (r.json()["messages"][0]["content"] for r in fake.requests[-2:])
    assert first == second == f"my key is {expected('aws-access-key', AWS_KEY_ID)}"
    other = "AKIAQWERTYUIOPASDFGH"
    USED.add(other)
    client.messages.create(model="claude-sonnet-5", max_tokens=8,
                           messages=[{"role": "user", "content": f"{AWS_KEY_ID} {other}"}])
    a, b = re.findall(r"\[REDACTED aws-access-key #[0-9a-f]{6}\]",
                      fake.requests[-1].json()["messages"][0]["content"])
    assert a == expected("aws-access-key", AWS_KEY_ID) and a != b


def test_streamed_request_is_redacted_and_the_answer_streams(bridge, fake):
    USED.update((AWS_KEY_ID, AWS_SECRET))
    with bridge.anthropic().messages.stream(model="claude-sonnet-5", max_tokens=64, messages=[
            {"role": "user", "content": ENV_FILE}]) as stream:
        assert stream.get_final_text() == "Hello from fake"
    body = fake.requests[-1].json()
    assert body["stream"] is True
    assert body["messages"][0]["content"] == ENV_FILE.replace(
        AWS_KEY_ID, expected("aws-access-key", AWS_KEY_ID)).replace(
        AWS_SECRET, expected("aws-secret-key", AWS_SECRET))
    chunks = list(bridge.openai().chat.completions.create(
        model="gpt-4o", stream=True, messages=[{"role": "user", "content": ENV_FILE}]))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert AWS_KEY_ID not in fake.requests[-1].body.decode()


def test_a_passthrough_that_carries_the_conversation_is_scanned_too(bridge, fake):
    USED.add(AWS_KEY_ID)
    bridge.anthropic().messages.count_tokens(model="claude-sonnet-5", messages=[
        {"role": "user", "content": f"my key is {AWS_KEY_ID}"}])
    seen = fake.requests[-1]
    assert seen.path.startswith("/v1/messages/count_tokens")
    assert seen.json()["messages"][0]["content"] == \
        f"my key is {expected('aws-access-key', AWS_KEY_ID)}"
    assert int(seen.header("content-length")) == len(seen.body)


def test_a_reload_changes_the_rules_for_the_next_requests(fake, make_bridge):
    USED.add(AWS_KEY_ID)
    bridge = make_bridge(provider_config(fake.url, extra='[secrets]\naction = "block"\n'),
                         actors=ACTORS)
    assert "secret scanning: 17 kind(s) of secret (0 of the operator's), action block" in \
        bridge.log()
    with pytest.raises(openai.BadRequestError):
        chat_request(bridge, "alice")
    bridge.config_path.write_text(provider_config(
        fake.url, extra='[secrets]\naction = "block"\nallow = ["^AKIAZ7Q3", "^Xq3Z"]\n'))
    bridge.wait_for_log(r"configuration reloaded")
    chat_request(bridge, "alice")
    assert AWS_KEY_ID in fake.requests[-1].body.decode()  # allowed now: sent as it was


# -- every rule: a true example, and look-alikes it must leave alone --------------------------

PEM = ("-----BEGIN RSA PRIVATE KEY-----\n" + "\n".join(
    ["MIIEowIBAAKCAQEAx4UbaDzY5xjW9hoJbS7Xb2yqE4Fr0mK1eQ9ZhN3cP8vR6tL2", ] * 6)
    + "\n-----END RSA PRIVATE KEY-----")
JWT = ("eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhbGljZSIsImV4cCI6MTcwMDAwMDAwMH0"
       ".dGhpcy1pcy1ub3QtYS1yZWFsLXNpZ25hdHVyZS1idXQtbG9uZw")
RULES = {
    "aws-access-key": (AWS_KEY_ID, ["AKIAIOSFODNN7EXAMPLE", "MYAKIAABCDEFGHIJKLMNOP",
                                    "AKIATESTONLY12345678"]),
    "aws-secret-key": (f"aws_secret_access_key={AWS_SECRET}",
                       ["aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
                        "sha1 = 2fd4e1c67a2d28fced849ee1bb76e7391b93eb12"]),
    "anthropic-key": ("sk-ant-api03-" + "Ab1_" * 23 + "xAA", ["sk-ant-central-test"]),
    "openai-key": ("sk-proj-" + "aB3dE5fG7h" * 5 + "T3BlbkFJ" + "kL9mN1oP3q" * 5,
                   ["sk-user-placeholder", "sk-proj-short"]),
    "google-api-key": ("AIza" + "SyD4-x9Q_vB2nM7kL0pW3eR5tY8uI1oP6aZ", ["AIzaShort"]),
    "github-token": ("ghp_" + "a1B2c3D4e5" * 3 + "F6g7H8", ["ghp_short", "gh_not_a_token"]),
    "gitlab-token": ("glpat-" + "x7Yz9Wq2Er4Ty6Ui8Op0", ["glpat-short"]),
    "slack-token": ("xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx",
                    ["xoxb-not-a-token"]),
    "stripe-key": ("sk_live_" + "4eC39HqLyjWDarjtT1zdp7dc", ["sk_test_4eC39HqLyjWDarjtT1zdp7dc"]),
    "npm-token": ("npm_" + "aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789", ["npm_install_script"]),
    "pypi-token": ("pypi-AgEIcHlwaS5vcmc" + "CJ" * 40, ["pypi-token-here"]),
    "private-key": (PEM, ['if line.startswith("-----BEGIN RSA PRIVATE KEY-----"):']),
    "jwt": (JWT, ["eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6"
                  "IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQ"
                  "ssw5c", "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.c2lnbmF0dXJlc2lnbmF0dXJl"]),
    "connection-password": ("postgres://app:Tr0ub4dor-3x@db.internal:5432/app",
                            ["postgres://app:${DB_PASSWORD}@db/app",
                             "https://user:password@example.com",
                             "http://me:TOKEN@host:8080"]),
    "azure-storage-key": ("AccountKey=" + "Zm9vYmFy" * 11, ["AccountKey=short"]),
    "sendgrid-key": ("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",
                     ["SG.short.key"]),
    "square-token": ("sq0csp-" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8s9T0u1V", ["sq0csp-short"]),
    "acme-token": ("acme_" + "0123456789abcdefghijklmn", ["acme_short"]),
}
LOOK_ALIKES = [
    "d41d8cd98f00b204e9800998ecf8427e",  # an MD5
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",  # a SHA-256
    "123e4567-e89b-12d3-a456-426614174000",  # a UUID
    "git commit 2fd4e1c67a2d28fced849ee1bb76e7391b93eb12",
    "const API_KEY = process.env.OPENAI_API_KEY;",
    "password = getpass()",
]


@pytest.mark.parametrize("rule", sorted(RULES))
def test_every_rule_finds_its_secret_and_leaves_look_alikes(bridge, fake, rule):
    secret, alikes = RULES[rule]
    USED.add(secret)
    text = f"before\n{secret}\nafter"
    bridge.openai().chat.completions.create(model="gpt-4o", messages=[
        {"role": "user", "content": text}, *({"role": "user", "content": a} for a in alikes)])
    got = [m["content"] for m in fake.requests[-1].json()["messages"]]
    assert secret not in got[0]
    assert re.search(rf"\[REDACTED {rule} #[0-9a-f]{{6}}\]", got[0]), got[0]
    assert got[1:] == alikes  # sent as they were


def test_look_alikes_common_in_source_code_are_left_alone(bridge, fake):
    bridge.openai().chat.completions.create(model="gpt-4o", messages=[
        {"role": "user", "content": text} for text in LOOK_ALIKES])
    assert [m["content"] for m in fake.requests[-1].json()["messages"]] == LOOK_ALIKES


# -- what the model produces: recorded, never changed ----------------------------------------

GH_TOKEN = "ghp_" + "Zz9Yy8Xx7W" * 3 + "w6V5u4"


def test_a_secret_in_streamed_output_is_recorded_and_the_stream_unchanged(bridge, fake):
    USED.add(GH_TOKEN)
    pieces = [GH_TOKEN[i:i + 7] for i in range(0, len(GH_TOKEN), 7)]
    events = [{"type": "message_start", "message": {
        "id": "msg_out", "type": "message", "role": "assistant", "model": "claude-sonnet-5",
        "content": [], "stop_reason": None, "usage": {"input_tokens": 5, "output_tokens": 1}}},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text",
                                                                      "text": ""}},
        *({"type": "content_block_delta", "index": 0,
           "delta": {"type": "text_delta", "text": p}} for p in ["token: ", *pieces]),
        {"type": "content_block_stop", "index": 0},
        {"type": "content_block_start", "index": 1, "content_block": {
            "type": "tool_use", "id": "toolu_77", "name": "Bash", "input": {}}},
        {"type": "content_block_delta", "index": 1, "delta": {
            "type": "input_json_delta", "partial_json": '{"command": "export T='}},
        {"type": "content_block_delta", "index": 1, "delta": {
            "type": "input_json_delta", "partial_json": GH_TOKEN + '"}'}},
        {"type": "content_block_stop", "index": 1},
        {"type": "message_delta", "delta": {"stop_reason": "tool_use"},
         "usage": {"output_tokens": 9}},
        {"type": "message_stop"}]
    fake.enqueue(Reply(events=[f"event: {e['type']}\ndata: {json.dumps(e)}\n\n"
                               for e in events]))
    with bridge.anthropic().messages.stream(model="claude-sonnet-5", max_tokens=64,
                                            messages=[{"role": "user", "content": "hi"}]) as s:
        final = s.get_final_message()
    assert final.content[0].text == "token: " + GH_TOKEN  # the stream was not altered
    assert final.content[1].input == {"command": f"export T={GH_TOKEN}"}
    bridge.wait_for_log(r"stream=True status=200 .*outcome=completed")


def test_websocket_output_is_scanned_too(bridge, fake):
    USED.add(GH_TOKEN)
    events = responses_events(900, {"model": "gpt-5"})
    for e in events:
        if e["type"] == "response.output_text.delta":
            e["delta"] = f" {GH_TOKEN}"
    fake.enqueue_ws(WsReply(events=events))
    got = websocket_request(bridge, "alice", file="nothing to see")
    assert "".join(e.delta for e in got if e.type == "response.output_text.delta") == \
        f" {GH_TOKEN}" * 3


# -- the mitmweb view of a flow, and nothing kept --------------------------------------------


def test_zz_nothing_kept_holds_a_secret(bridge, fake):
    bridge.stop()
    db = bridge.workdir / "data" / "aibridge.db"
    saved = bridge.flows_path.read_bytes()
    log = bridge.log()
    raw = db.read_bytes() + b"".join(p.read_bytes() for p in db.parent.glob("*")
                                      if p.name.startswith("aibridge.db-"))
    with open(bridge.flows_path, "rb") as f:
        flows = [fl for fl in io.FlowReader(f).stream() if fl.type == "http"]
    # Dave's scanning is off: his flows are kept as sent (his records are still masked).
    kept = [fl for fl in flows if fl.metadata.get("aibridge", {}).get("actor", {}).get("id")
            != "dave"]
    assert len(kept) < len(flows)
    texts = "\n".join(
        [fl.request.get_text(strict=False) or "" for fl in kept]
        + [fl.response.get_text(strict=False) or "" for fl in kept if fl.response]
        + [m.text for fl in kept if fl.websocket for m in fl.websocket.messages if m.is_text])
    assert USED and saved
    for secret in USED:
        assert secret.encode() not in raw, secret
        assert secret not in texts or secret == GH_TOKEN, secret  # output: never changed
        assert secret not in log, secret
    # The placeholders are what was kept; findings are recorded by actor and rule.
    with sqlite3.connect(db) as conn:
        findings = conn.execute(
            "SELECT i.actor_id, f.rule, f.action, f.source, f.location, f.secret_hash "
            "FROM findings f JOIN interceptions i ON i.id = f.interception_id").fetchall()
        prompts = [p for (p,) in conn.execute("SELECT prompt FROM prompt_usages")]
        tools = [a for (a,) in conn.execute("SELECT arguments FROM tool_usages")]
    actions = {(actor, action) for actor, rule, action, source, _, _ in findings
               if rule == "aws-access-key" and source == "request"}
    assert {("alice", "redact"), ("bob", "log"), ("carol", "block")} <= actions
    assert not any(actor == "dave" for actor, *_ in findings)  # off: not even scanned
    assert ("alice", "github-token", "log", "response") in {f[:4] for f in findings}
    assert any(f[4] == "tool call toolu_77 in the response" for f in findings)
    hashes = {f[5] for f in findings if f[1] == "aws-access-key" and f[2] == "redact"}
    assert len(hashes) == 2  # the same key counted as one secret; the other key apart
    assert any(expected("aws-access-key", AWS_KEY_ID) in p for p in prompts)
    assert any(expected("github-token", GH_TOKEN) in a for a in tools)
    assert f"deploy with {expected('aws-access-key', AWS_KEY_ID)} please" in prompts
    # Saved flows: the request as sent (or masked after it was sent, for log mode), with the
    # findings in the metadata and the comment.
    commented = [fl.comment for fl in flows if "secret" in (fl.comment or "")]
    assert any(re.search(r"^alice · claude-sonnet-5 · ok · .* · 2 secrets redacted", c)
               for c in commented), commented
    assert any("2 secrets logged" in c for c in commented)
    assert any(re.search(r"\d secrets in the output", c) for c in commented), commented
    logged = [fl for fl in flows if any(s.get("action") == "log" and s.get("source") == "request"
                                        for s in fl.metadata["aibridge"].get("secrets", []))]
    assert logged and all(expected("aws-access-key", AWS_KEY_ID) in
                          (fl.request.get_text() or "") for fl in logged
                          if fl.websocket is None)
    sockets = [fl for fl in kept if fl.websocket is not None]
    assert sockets and all(AWS_KEY_ID not in m.text for fl in sockets
                           for m in fl.websocket.messages if m.is_text)
    # The report lists them by actor and rule.
    config = bridge.workdir / "report.toml"
    config.write_text(f'[recording]\nurl = "sqlite:///{db}"\n')
    rows = json.loads(subprocess.run(
        [AIBRIDGE, "usage", "--findings", "--config", str(config), "--format", "json"],
        capture_output=True, text=True, timeout=60, check=True).stdout)
    by = {(r["actor"], r["rule"]): r for r in rows}
    assert by[("carol", "aws-access-key")]["block"] == 4
    assert by[("bob", "aws-access-key")]["log"] == 5  # four APIs and the prompt
    assert by[("alice", "github-token")]["output"] >= 2
    table = subprocess.run([AIBRIDGE, "usage", "--findings", "--config", str(config)],
                           capture_output=True, text=True, timeout=60, check=True).stdout
    assert table.splitlines()[0].split() == ["actor", "rule", "log", "redact", "block",
                                             "output", "secrets", "requests", "last"]


def test_mitmweb_comment_and_content_view_mark_the_redactions(fake, tmp_path_factory):
    from tests.e2e.test_mitmweb import MitmwebProcess, bridged, wait_for

    USED.update((AWS_KEY_ID, AWS_SECRET))
    workdir = tmp_path_factory.mktemp("mitmweb-secrets")
    (workdir / "actors.toml").write_text(ACTORS)
    web = MitmwebProcess(workdir, provider_config(fake.url, extra=SECRETS))
    web.env["AIBRIDGE_TEST_SALT"] = SALT
    web.start()
    try:
        messages_request(web, "alice")
        with pytest.raises(anthropic.BadRequestError):
            messages_request(web, "carol")
        flow = wait_for("the redacted flow", lambda: bridged(web.flows(), "/v1/messages"))
        assert re.fullmatch(r"alice · claude-sonnet-5 · ok · 11→7 tok · \$[0-9.]+ · 2 secrets "
                            r"redacted · anthropic · key .*", flow["comment"]), flow["comment"]
        view = json.loads(web.rest(f"/flows/{flow['id']}/request/content/auto.json"))
        assert view["view_name"] == "Secrets", view
        text = view["text"]
        assert text.startswith("# 2 secrets redacted; each marked ◀ below")
        assert (f"#   {expected('aws-access-key', AWS_KEY_ID)} redacted before it was sent · "
                "tool result of call toolu_01 in message 2") in text
        marked = [line for line in text.splitlines() if "◀" in line and "content" in line]
        assert marked and marked[0].endswith("# ◀ aws-access-key redact, aws-secret-key redact")
        listing = web.rest("/flows").decode()
        dump = web.rest("/flows/dump")
        refused = [f for f in web.flows() if f.get("comment", "").startswith("carol")]
        assert refused and "secret detected: aws-access-key" in refused[0]["comment"]
        blocked = json.loads(web.rest(f"/flows/{refused[0]['id']}/request/content/auto.json"))
        assert blocked["view_name"] == "Secrets"
        assert "refused: not sent" in blocked["text"]
        for secret in (AWS_KEY_ID, AWS_SECRET):
            assert secret not in listing and secret.encode() not in dump
            assert secret not in blocked["text"]
    finally:
        web.stop()


# -- a real Claude Code session ---------------------------------------------------------------

CLAUDE = ROOT / "tools" / "agents" / "node_modules" / ".bin" / "claude"


def read_tool_call(path: str) -> Reply:
    """A streamed Messages answer asking for `Read` of `path`, as Claude Code expects it."""
    events = [
        {"type": "message_start", "message": {
            "id": "msg_read", "type": "message", "role": "assistant",
            "model": "claude-sonnet-5", "content": [], "stop_reason": None,
            "stop_sequence": None, "usage": {"input_tokens": 20, "output_tokens": 1}}},
        {"type": "content_block_start", "index": 0, "content_block": {
            "type": "tool_use", "id": "toolu_read1", "name": "Read", "input": {}}},
        {"type": "content_block_delta", "index": 0, "delta": {
            "type": "input_json_delta", "partial_json": json.dumps({"file_path": path})}},
        {"type": "content_block_stop", "index": 0},
        {"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": None},
         "usage": {"output_tokens": 12}},
        {"type": "message_stop"}]
    return Reply(events=[f"event: {e['type']}\ndata: {json.dumps(e)}\n\n" for e in events])


def claude_code(bridge, project, prompt: str) -> subprocess.CompletedProcess:
    assert CLAUDE.exists(), "claude missing: run scripts/setup (install-agents)"
    home = project.parent / "home"
    home.mkdir(exist_ok=True)
    return subprocess.run(
        [str(CLAUDE), "-p", prompt, "--output-format", "json", "--max-turns", "3",
         "--model", "claude-sonnet-5", "--allowedTools", "Read"],
        env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": str(home),
             "CLAUDE_CONFIG_DIR": str(home / ".claude"), "HTTPS_PROXY": bridge.proxy_url(),
             "NODE_EXTRA_CA_CERTS": bridge.ca, "ANTHROPIC_API_KEY": ALICE_TOKEN,
             "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1", "DISABLE_AUTOUPDATER": "1",
             "DISABLE_TELEMETRY": "1", "DISABLE_ERROR_REPORTING": "1"},
        cwd=project, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)


@pytest.fixture
def project(tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    (project / "deploy.env").write_text(ENV_FILE)
    return project


def test_claude_code_reads_a_key_and_the_provider_sees_the_placeholder(fake, make_bridge,
                                                                      project):
    bridge = make_bridge(provider_config(fake.url, extra='[secrets]\nsalt_env = "SALT"\n'),
                         actors=ACTORS, env={"SALT": SALT})
    fake.enqueue(read_tool_call(str(project / "deploy.env")), path="/v1/messages")
    result = claude_code(bridge, project, "what is in deploy.env?")
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout)["result"] == "Hello from fake"  # the session completed
    turns = [r for r in fake.requests if r.path.startswith("/v1/messages")]
    assert len(turns) == 2
    second = turns[1].body.decode()
    assert "toolu_read1" in second  # the Read result went back to the provider...
    assert AWS_KEY_ID not in second and AWS_SECRET not in second  # ... without the key
    assert expected("aws-access-key", AWS_KEY_ID) in second
    assert expected("aws-secret-key", AWS_SECRET) in second
    bridge.stop()
    with sqlite3.connect(bridge.workdir / "data" / "aibridge.db") as conn:
        rows = conn.execute("SELECT rule, action, location FROM findings").fetchall()
    found = {(rule, action) for rule, action, where in rows
             if re.fullmatch(r"tool result of call toolu_read1 in message \d+", where)}
    assert found == {("aws-access-key", "redact"), ("aws-secret-key", "redact")}, rows


def test_claude_code_prints_the_bridge_message_when_a_key_is_blocked(fake, make_bridge,
                                                                     project):
    bridge = make_bridge(provider_config(fake.url, extra='[secrets]\naction = "block"\n'),
                         actors=ACTORS)
    fake.enqueue(read_tool_call(str(project / "deploy.env")), path="/v1/messages")
    result = claude_code(bridge, project, "what is in deploy.env?")
    out = result.stdout + result.stderr
    assert re.search(r"API Error: 400 secret detected: aws-access-key in tool result of call "
                     r"toolu_read1 in message \d+", out), out
    assert AWS_KEY_ID not in out
    assert len([r for r in fake.requests if r.path.startswith("/v1/messages")]) == 1


def test_findings_table_and_report_on_postgres(postgres_url, tmp_path):
    from aibridge.recording.engine import make_engine
    from aibridge.recording.findings_report import finding_rows
    from aibridge.recording.paths import resolve_url
    from aibridge.recording.recorder import Recorder
    from aibridge.recording.records import SecretFinding
    from tests.conftest import interception

    records = [*interception("pg-f1", actor="alice"), *interception("pg-f2", actor="bob")]
    findings = [SecretFinding("pg-f1", "aws-access-key", "message 1", "redact", "a" * 12),
                SecretFinding("pg-f1", "aws-access-key", "message 3", "redact", "a" * 12),
                SecretFinding("pg-f2", "jwt", "model output", "log", "b" * 12, "response")]
    with Recorder(postgres_url, spool_path=tmp_path / "spool.jsonl") as recorder:
        assert recorder.backend == "postgresql"
        for record in [*records, *findings]:
            recorder.submit(record)
        assert recorder.flush(30), recorder.stats()
    engine = make_engine(resolve_url(postgres_url))
    try:
        with engine.connect() as connection:
            rows = finding_rows(connection)
    finally:
        engine.dispose()
    assert [(r.actor, r.rule, r.redact, r.output, r.secrets, r.requests) for r in rows] == [
        ("alice", "aws-access-key", 2, 0, 1, 1), ("bob", "jwt", 0, 1, 1, 1)]
