"""The admission step and its policy: which action applies to whom, what each does to the
request and the copies the bridge keeps; the reporter's masking and findings; the findings
report; the tap's look at the output; the flow comment."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
import sqlalchemy as sa
from mitmproxy import http
from mitmproxy.test import tflow

from aibridge.admission.pipeline import Candidate
from aibridge.admission.secrets import SecretScan, SecretsOutcome, SecretsPolicy, encode
from aibridge.admission.steps import JsonBody
from aibridge.config import BridgeConfig, SecretsConfig
from aibridge.intercept import Actor, CredentialInfo, CredentialKind, Interception, ResponseError
from aibridge.observe import flowview
from aibridge.observe.clients import ClientInfo
from aibridge.observe.reporting import Reporter
from aibridge.pricing import UNPRICED
from aibridge.providers import build_registry
from aibridge.providers.anthropic_messages import MESSAGES
from aibridge.recording import schema
from aibridge.recording.codec import new_entry
from aibridge.recording.findings_report import finding_rows, render
from aibridge.recording.migrate import upgrade
from aibridge.recording.records import PromptUsage, SecretFinding, ToolUsage
from aibridge.recording.store import Store
from aibridge.secrets.build import build_secrets
from aibridge.secrets.findings import Finding
from aibridge.streaming import output
from aibridge.streaming.tap import StreamTap
from aibridge.summary import ResponseSummary, ToolCall

KEY_ID = "AKIAZ7Q3XWERTYUIOPLK"
ALICE = Actor("alice", {"Team": "ml"})
BOB = Actor("bob", {"Team": "sec,ops"})
CAROL = Actor("carol", {})
REGISTRY = build_registry(BridgeConfig(), Path("/nonexistent"), environ={})
ANTHROPIC = REGISTRY.for_host("api.anthropic.com")


def policy(**config) -> SecretsPolicy:
    setup = build_secrets(SecretsConfig.model_validate(config), environ={"S": "salt"})
    assert setup is not None
    return SecretsPolicy(setup.config, setup.scanner, "Team")


def messages_body(text: str = f"key {KEY_ID}") -> dict:
    return {"model": "claude-sonnet-5", "max_tokens": 8, "messages": [
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": f"the key was {KEY_ID}", "signature": "sig"},
            {"type": "tool_use", "id": "toolu_1", "name": "Read", "input": {"path": ".env"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1",
                                      "content": text}]}]}


def request(body: dict, encoding: str | None = None) -> http.Request:
    raw = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json")]
    if encoding:
        raw = gzip.compress(raw)
        headers.append((b"content-encoding", encoding.encode()))
    headers.append((b"content-length", str(len(raw)).encode()))
    req = http.Request.make("POST", "https://api.anthropic.com/v1/messages", b"", headers)
    req.raw_content = raw  # as the client encoded it
    return req


def admit(step: SecretScan, actor: Actor, req: http.Request, provider=ANTHROPIC) -> Candidate:
    candidate = Candidate(provider, provider.match("POST", "/v1/messages"), "/v1/messages",
                          None, request=req, actor=actor)
    JsonBody(1 << 20).admit(candidate)
    step.admit(candidate)
    return candidate


def test_overrides_then_the_rule_then_the_default() -> None:
    p = policy(action="redact", rules=[{"id": "acme", "regex": "acme_[0-9]{8}", "action": "block"}],
               overrides=[{"match": {"team": "sec"}, "action": "log"},
                          {"provider": "openai", "rule": "aws-*", "action": "block"},
                          {"match": {"actor": "carol"}, "action": "off"}])
    assert p.action(ALICE, "anthropic", "aws-access-key") == "redact"
    assert p.action(ALICE, "anthropic", "acme") == "block"  # the rule's own
    assert p.action(BOB, "anthropic", "acme") == "log"  # a team in a list matches
    assert p.action(ALICE, "openai", "aws-secret-key") == "block"
    assert p.action(ALICE, "openai", "jwt") == "redact"
    assert not p.scans(CAROL, "anthropic") and p.scans(ALICE, "anthropic")


@pytest.mark.parametrize("encoding", [None, "gzip"])
def test_redact_rewrites_the_body_and_its_length(encoding: str | None) -> None:
    step = SecretScan(policy(salt_env="S"))
    req = request(messages_body(), encoding)
    candidate = admit(step, ALICE, req)
    sent = json.loads(req.get_content())
    result = sent["messages"][1]["content"][0]["content"]
    assert result.startswith("key [REDACTED aws-access-key #") and KEY_ID not in result
    assert int(req.headers["content-length"]) == len(req.raw_content)
    # Signed thinking is the provider's own output: kept (and logged), never changed.
    assert sent["messages"][0]["content"][0]["thinking"] == f"the key was {KEY_ID}"
    found = candidate.secrets
    assert found is not None and found.rewritten
    assert [(f.rule, f.where, f.action) for f in found.findings] == [
        ("aws-access-key", "thinking in message 0", "log"),
        ("aws-access-key", "tool result of call toolu_1 in message 1", "redact")]
    # A secret stays (the thinking): the kept copy is masked once sent.
    found.mask_stored(req)
    assert KEY_ID not in req.get_content().decode()
    assert int(req.headers["content-length"]) == len(req.raw_content)


def test_log_sends_as_is_and_masks_the_kept_copy() -> None:
    step = SecretScan(policy(action="log"))
    req = request(messages_body())
    raw = req.raw_content
    candidate = admit(step, ALICE, req)
    assert req.raw_content == raw  # the client's exact bytes go upstream
    assert candidate.secrets is not None and candidate.secrets.mask is not None
    candidate.secrets.mask_stored(req)
    assert KEY_ID not in req.get_content().decode()
    # (a frame of the socket's API, here Messages-shaped: the mask reads its texts)
    frame = json.dumps({"type": "response.create", "response": {
        "messages": [{"role": "user", "content": f"x {KEY_ID}"}]}})
    masked = candidate.secrets.mask_frame(frame)
    assert masked is not None and KEY_ID not in masked
    assert json.loads(masked)["type"] == "response.create"


def test_block_refuses_naming_the_kind_and_where_never_the_secret() -> None:
    step = SecretScan(policy(action="block"))
    req = request(messages_body())
    with pytest.raises(ResponseError) as caught:
        admit(step, ALICE, req)
    error = caught.value
    assert (error.status, error.code, error.type, error.should_retry) == (
        400, "secret_detected", "invalid_request_error", False)
    assert error.message.startswith(
        "secret detected: aws-access-key in tool result of call toolu_1 in message 1 ")
    assert KEY_ID not in error.message


def test_off_and_clean_requests_are_left_alone() -> None:
    step = SecretScan(policy(overrides=[{"match": {"actor": "carol"}, "action": "off"}]))
    req = request(messages_body())
    assert admit(step, CAROL, req).secrets is None
    assert admit(step, ALICE, request(messages_body("nothing here"))).secrets is not None
    clean = {"model": "m", "messages": [{"role": "user", "content": "nothing to see here"}]}
    assert admit(step, ALICE, request(clean)).secrets is None


def test_encode_keeps_lone_surrogates_valid() -> None:
    assert json.loads(encode({"t": "\ud800 é"})) == {"t": "\ud800 é"}
    assert encode({"t": "é"}) == '{"t":"é"}'.encode()


# -- what is recorded ------------------------------------------------------------------------------


class Sink:
    def __init__(self) -> None:
        self.records: list = []

    def submit(self, record) -> None:
        self.records.append(record)


def interception() -> Interception:
    return Interception(provider="anthropic", provider_type="anthropic", route="/v1/messages",
                        model="claude-sonnet-5", streaming=False, actor=ALICE,
                        credential=CredentialInfo(CredentialKind.CENTRALIZED, "sk-a...bcde", 30),
                        correlating_tool_call_id=None)


def test_the_reporter_masks_what_it_records() -> None:
    sink = Sink()
    reporter = Reporter(sink, None, prompts="truncated", prompt_limit=12)
    setup = build_secrets(SecretsConfig(action="log"))
    assert setup is not None
    reporter.secrets = setup.scanner
    i = interception()
    body = {"messages": [{"role": "user", "content": f"use {KEY_ID} now"}]}
    reporter.started(i, api=MESSAGES, transport="http", client=ClientInfo("x", None),
                     user_agent=None, body=body, server=("h", 1))
    (prompt,) = [r for r in sink.records if isinstance(r, PromptUsage)]
    # Masked before it was cut: no half of a key survives the truncation either.
    assert prompt.prompt == "use [REDACTE" and prompt.truncated
    summary = ResponseSummary(tool_calls=[ToolCall("t1", "Bash", f'{{"k": "{KEY_ID}"}}')])
    reporter.ended(i, outcome="failed", status=400, error_type="bad_request",
                   error_message=f"bad key {KEY_ID}", summary=summary, key_attempts=1,
                   time_to_first_token=None, cost=UNPRICED)
    (tool,) = [r for r in sink.records if isinstance(r, ToolUsage)]
    ended = sink.records[-1]
    assert KEY_ID not in tool.arguments and KEY_ID not in ended.error_message
    found = reporter.scan_output(i, [("model output", f"here: {KEY_ID}")])
    assert [(f.rule, f.action, f.source) for f in found] == [
        ("aws-access-key", "log", "response")]
    assert isinstance(sink.records[-1], SecretFinding)
    assert KEY_ID not in repr(sink.records)


def test_findings_are_stored_and_reported_by_actor_and_rule(tmp_path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'r.db'}")
    upgrade(engine, "test")
    sink = Sink()
    reporter = Reporter(sink, None)
    i = interception()
    reporter.started(i, api=MESSAGES, transport="http", client=ClientInfo("x", None),
                     user_agent=None, body={}, server=("h", 1))
    reporter.findings(i, [Finding("aws-access-key", "message 0", "redact", "a" * 12),
                          Finding("aws-access-key", "message 1", "redact", "a" * 12),
                          Finding("jwt", "message 1", "block", "b" * 12),
                          Finding("jwt", "model output", "log", "c" * 12, "response")])
    Store(engine).write([new_entry(r) for r in sink.records])
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(schema.findings)).scalar() == 4
        rows = finding_rows(conn)
    assert [(r.actor, r.rule, r.log, r.redact, r.block, r.output, r.secrets, r.requests)
            for r in rows] == [("alice", "aws-access-key", 0, 2, 0, 0, 1, 1),
                               ("alice", "jwt", 0, 0, 1, 1, 2, 1)]
    table = render(rows, "table").splitlines()
    assert table[0].split()[:3] == ["actor", "rule", "log"] and len(table) == 3
    assert json.loads(render(rows, "json"))[0]["redact"] == 2
    assert render([], "table") == "no recorded findings\n"


# -- the output, and what people see ---------------------------------------------------------------


def test_the_tap_keeps_the_stream_for_a_look_at_the_whole_output() -> None:
    events = [{"type": "message_start", "message": {"id": "m", "model": "x", "usage": {}}},
              {"type": "content_block_start", "index": 0,
               "content_block": {"type": "text", "text": ""}},
              *({"type": "content_block_delta", "index": 0,
                 "delta": {"type": "text_delta", "text": KEY_ID[i:i + 5]}}
                for i in range(0, 20, 5)),
              {"type": "message_stop"}]
    body = "".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n" for e in events).encode()
    tap = StreamTap(MESSAGES, None, keep_events=True)
    assert b"".join(tap(body[i:i + 7]) for i in range(0, len(body), 7)) == body
    tap(b"")
    assert output.texts(MESSAGES, tap, tap.summary, None) == [("model output", KEY_ID)]
    plain = StreamTap(MESSAGES, None)
    plain(body)
    assert plain.kept is None and output.texts(MESSAGES, plain, plain.summary, None) == []


def test_the_comment_says_what_scanning_did_after_the_lead() -> None:
    flow = tflow.tflow(resp=True)
    flowview.start(flow, ANTHROPIC, ANTHROPIC.match("POST", "/v1/messages"), ALICE)
    flowview.secrets(flow, [Finding("aws-access-key", "message 1", "redact", "a" * 12),
                            Finding("jwt", "message 1", "redact", "b" * 12)])
    flowview.ended(flow, interception(), ResponseSummary(input_tokens=3, output_tokens=2),
                   "completed", None, UNPRICED)
    assert flow.comment.startswith("alice · claude-sonnet-5 · ok · 3→2 tok · unpriced · "
                                   "2 secrets redacted · anthropic")
    assert flow.metadata["aibridge"]["secrets"][0] == {
        "rule": "aws-access-key", "where": "message 1", "action": "redact",
        "placeholder": "[REDACTED aws-access-key #aaaaaa]", "source": "request"}
    assert SecretsOutcome().mask_frame("{}") is None  # nothing found: nothing to mask
