"""The scanner: placeholders (keyed, stable, salted), the memory of scanned blocks (bounded,
holding no secret), redaction, and the texts each wire API hands it."""

from __future__ import annotations

import hashlib
import hmac
import pickle

import pytest

from aibridge.config import ConfigError, SecretsConfig
from aibridge.providers.anthropic_messages import MESSAGES
from aibridge.providers.openai_chat import CHAT_COMPLETIONS
from aibridge.providers.openai_embeddings import EMBEDDINGS
from aibridge.providers.openai_responses import RESPONSES
from aibridge.secrets.build import build_secrets
from aibridge.secrets.findings import Finding, summary
from aibridge.secrets.rules import rule_set
from aibridge.secrets.scanner import Detector, Hit, Scanner, key_from_salt, placeholder, redact

KEY_ID = "AKIAZ7Q3XWERTYUIOPLK"
OTHER = "AKIAQWERTYUIOPASDFGH"


def scanner(salt: str | None = "s", entries: int = 100) -> Scanner:
    return Scanner(Detector(rule_set([], entropy=False), key=key_from_salt(salt)), entries)


def test_placeholder_names_the_kind_and_a_keyed_hash_of_the_secret() -> None:
    s = scanner("pepper")
    text = f"key {KEY_ID} and {OTHER} and {KEY_ID}"
    masked = s.mask(text)
    key = hashlib.sha256(b"aibridge secrets placeholders\0pepper").digest()
    digest = hmac.new(key, KEY_ID.encode(), hashlib.sha256).hexdigest()
    assert masked.startswith(f"key [REDACTED aws-access-key #{digest[:6]}] and [REDACTED ")
    first, second, third = (h.digest for h in s.scan(text))
    assert first == third == digest[:12] and second != first
    # The same with another salt (or the process's own key) is different: the six digits
    # cannot be looked up without the key.
    assert scanner("other").mask(text) != masked
    assert scanner(None).mask(text) == scanner(None).mask(text) != masked


def test_a_block_seen_before_is_redacted_from_memory_that_holds_no_secret() -> None:
    s = scanner()
    text = f"prefix {KEY_ID} suffix"
    first = s.scan(text)
    assert (s.hits, s.misses) == (0, 1)
    again = s.scan("".join(["prefix ", KEY_ID, " suffix"]))  # another object, same text
    assert again == first and (s.hits, s.misses) == (1, 1)
    assert redact(text, again) == s.mask(text)
    memory = pickle.dumps(s._seen)
    assert KEY_ID.encode() not in memory and b"Z7Q3" not in memory


def test_the_memory_is_bounded_least_recently_used_out_first() -> None:
    s = scanner(entries=3)
    texts = [f"block number {i} without secrets" for i in range(4)]
    for text in texts[:3]:
        s.scan(text)
    s.scan(texts[0])  # used again: stays
    s.scan(texts[3])  # evicts texts[1]
    assert len(s._seen) == 3
    before = s.misses
    s.scan(texts[0])
    s.scan(texts[1])
    assert s.misses == before + 1
    unbounded = scanner(entries=0)
    unbounded.scan(texts[0])
    assert not unbounded._seen


def test_overlapping_hits_become_one() -> None:
    hits = Detector(rule_set([], entropy=False)).find(
        "postgres://u:eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhIn0.c2lnbmF0dXJlc2lnbmF0dXJl@db")
    assert len(hits) == 1


def test_redaction_keeps_the_rest_of_the_text() -> None:
    hits = (Hit("a", 2, 4, "0" * 12), Hit("b", 6, 7, "1" * 12))
    assert redact("0123456789", hits) == f"01{placeholder(hits[0])}45{placeholder(hits[1])}789"
    assert redact("0123", ()) == "0123"


def test_salt_comes_from_the_environment_and_a_reload_keeps_the_memory() -> None:
    config = SecretsConfig(salt_env="SALT")
    with pytest.raises(ConfigError, match="SALT is not set"):
        build_secrets(config, environ={})
    first = build_secrets(config, environ={"SALT": "a"})
    assert first is not None
    assert build_secrets(config, environ={"SALT": "a"}, previous=first) is first
    assert build_secrets(config, environ={"SALT": "b"}, previous=first) is not first
    assert build_secrets(SecretsConfig(action="off")) is None
    assert build_secrets(SecretsConfig.model_validate(
        {"action": "off", "overrides": [{"match": {"team": "x"}, "action": "log"}]})) is not None


def test_summary_counts_by_action_and_output() -> None:
    found = [Finding("a", "w", "redact", "0" * 12), Finding("a", "w", "redact", "1" * 12),
             Finding("b", "w", "block", "2" * 12), Finding("c", "w", "log", "3" * 12, "response")]
    assert summary(found) == "1 secret blocked, 2 secrets redacted, 1 secret in the output"
    assert summary([f.to_dict() for f in found]) == summary(found)
    assert summary([]) == ""


# -- the texts of each wire API --------------------------------------------------------------------


def slots(api, body) -> list[tuple[str, str, bool]]:
    return [(s.where, s.text, s.signed) for s in api.texts(body)]


def test_messages_texts() -> None:
    body = {"system": [{"type": "text", "text": "sys"}], "tools": [{"name": "t"}], "messages": [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "hmm", "signature": "sig"},
            {"type": "redacted_thinking", "data": "enc"},
            {"type": "text", "text": "ok"},
            {"type": "tool_use", "id": "toolu_1", "name": "Bash", "input": {"cmd": ["ls", "-l"]}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1",
             "content": [{"type": "text", "text": "out"}, {"type": "image", "source": {}}]},
            {"type": "document", "source": {"type": "text", "data": "doc"}},
            {"type": "new_kind", "payload": {"x": "y"}}]}]}
    assert slots(MESSAGES, body) == [
        ("system prompt", "sys", False), ("message 0", "hi", False),
        ("thinking in message 1", "hmm", True), ("message 1", "ok", False),
        ("tool call toolu_1 in message 1", "ls", False),
        ("tool call toolu_1 in message 1", "-l", False),
        ("tool result of call toolu_1 in message 2", "out", False),
        ("document in message 2", "doc", False),
        ("message 2", "new_kind", False), ("message 2", "y", False)]
    assert slots(MESSAGES, {"system": "plain", "messages": "bad"}) == [
        ("system prompt", "plain", False)]


def test_chat_texts() -> None:
    body = {"messages": [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "image_url"}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}},
            {"id": "call_2", "type": "custom", "custom": {"name": "g", "input": "raw"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "result"}]}
    assert slots(CHAT_COMPLETIONS, body) == [
        ("system message 0", "sys", False), ("message 1", "hi", False),
        ("tool call call_1 in message 2", "{}", False),
        ("tool call call_2 in message 2", "raw", False),
        ("tool result of call call_1 in message 3", "result", False)]


def test_responses_and_embeddings_texts() -> None:
    body = {"instructions": "be brief", "input": [
        {"role": "user", "content": [{"type": "input_text", "text": "hi"}]},
        {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "out"},
        {"type": "reasoning", "summary": [{"type": "summary_text", "text": "why"}]},
        {"type": "item_reference", "id": "x"}]}
    assert slots(RESPONSES, body) == [
        ("instructions", "be brief", False), ("input item 0", "hi", False),
        ("tool call c1 in input item 1", "{}", False),
        ("tool result of call c1 in input item 2", "out", False),
        ("reasoning in input item 3", "summary_text", True),
        ("reasoning in input item 3", "why", True)]
    assert slots(RESPONSES, {"input": "plain"}) == [("input", "plain", False)]
    assert slots(EMBEDDINGS, {"input": ["a", [1, 2], "b"]}) == [
        ("input 0", "a", False), ("input 2", "b", False)]


def test_a_slot_replaces_its_text_in_place() -> None:
    body = {"messages": [{"role": "user", "content": [{"type": "text", "text": "x"}]}]}
    (slot,) = MESSAGES.texts(body)
    slot.replace("y")
    assert body["messages"][0]["content"][0]["text"] == "y"
