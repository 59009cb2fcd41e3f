"""Actor header names, the Actor type and the SDK option helpers (reference §3)."""

import anthropic
import httpx2
import openai
import pytest

from aibridge.intercept import (
    ACTOR_HEADER_PREFIX,
    Actor,
    actor_headers,
    actor_headers_as_anthropic_opts,
    actor_headers_as_openai_opts,
    actor_id_header,
    actor_metadata_header,
    is_actor_header,
)


def test_header_names():
    assert ACTOR_HEADER_PREFIX == "X-AI-Bridge-Actor"
    assert actor_id_header() == "X-AI-Bridge-Actor-ID"
    assert actor_metadata_header("Username") == "X-AI-Bridge-Actor-Metadata-Username"
    assert actor_metadata_header("team_name") == "X-AI-Bridge-Actor-Metadata-team_name"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("X-AI-Bridge-Actor-ID", True),
        ("X-Ai-Bridge-Actor-Id", True),
        ("x-ai-bridge-actor-metadata-name", True),
        ("X-AI-BRIDGE-ACTOR-METADATA-ROLE", True),
        ("X-AI-Bridge-Actor", True),
        ("X-AI-Bridge-Request-ID", False),
        ("X-AI-Bridge", False),
        ("Authorization", False),
        ("", False),
    ],
)
def test_is_actor_header(name, expected):
    assert is_actor_header(name) is expected


def test_metadata_is_a_read_only_string_copy():
    source = {"Username": "alice", "Uid": 42}
    actor = Actor("user-1", source)
    source["Username"] = "mallory"
    assert dict(actor.metadata) == {"Username": "alice", "Uid": "42"}
    with pytest.raises(TypeError):
        actor.metadata["Username"] = "mallory"  # type: ignore[index]


def test_equality_and_hash_ignore_metadata_order():
    a = Actor("u", {"A": "1", "B": "2"})
    b = Actor("u", {"B": "2", "A": 1})
    assert a == b
    assert hash(a) == hash(b)
    assert len({a, b, Actor("u"), Actor("v")}) == 3


@pytest.mark.parametrize(
    ("actor_id", "metadata"),
    [
        ("u", {"Bad Key": "x"}),
        ("u", {"": "x"}),
        ("u", {"Key": "line\r\nX-Injected: 1"}),
        ("u\nX-Injected: 1", {}),
    ],
)
def test_values_that_would_break_a_header_are_rejected(actor_id, metadata):
    with pytest.raises(ValueError):
        Actor(actor_id, metadata)


def test_actor_headers_id_first_then_metadata_in_order():
    actor = Actor("user-123", {"Username": "alice", "Team": "ml", "Level": 3})
    assert actor_headers(actor) == [
        ("X-AI-Bridge-Actor-ID", "user-123"),
        ("X-AI-Bridge-Actor-Metadata-Username", "alice"),
        ("X-AI-Bridge-Actor-Metadata-Team", "ml"),
        ("X-AI-Bridge-Actor-Metadata-Level", "3"),
    ]
    assert actor_headers(Actor("only-id")) == [("X-AI-Bridge-Actor-ID", "only-id")]
    assert actor_headers(None) == []


def test_sdk_opts_shape():
    actor = Actor("user-123", {"Username": "alice"})
    expected = {
        "extra_headers": {
            "X-AI-Bridge-Actor-ID": "user-123",
            "X-AI-Bridge-Actor-Metadata-Username": "alice",
        }
    }
    assert actor_headers_as_openai_opts(actor) == expected
    assert actor_headers_as_anthropic_opts(actor) == expected
    assert actor_headers_as_openai_opts(None) == {"extra_headers": {}}
    assert actor_headers_as_anthropic_opts(None) == {"extra_headers": {}}


def _capturing_client(seen: list[httpx2.Request], body: bytes) -> httpx2.Client:
    def handler(request: httpx2.Request) -> httpx2.Response:
        seen.append(request)
        return httpx2.Response(200, content=body, headers={"content-type": "application/json"})

    return httpx2.Client(transport=httpx2.MockTransport(handler))


def test_openai_sdk_sends_the_opts():
    seen: list[httpx2.Request] = []
    body = (
        b'{"id":"c","object":"chat.completion","created":0,"model":"m","choices":[{"index":0,'
        b'"finish_reason":"stop","message":{"role":"assistant","content":"hi"}}]}'
    )
    client = openai.OpenAI(
        api_key="sk-test",
        base_url="https://api.openai.test/v1",
        http_client=_capturing_client(seen, body),
    )
    opts = actor_headers_as_openai_opts(Actor("user-123", {"Username": "alice"}))
    client.chat.completions.create(**opts, model="m", messages=[{"role": "user", "content": "x"}])
    assert seen[0].headers["x-ai-bridge-actor-id"] == "user-123"
    assert seen[0].headers["x-ai-bridge-actor-metadata-username"] == "alice"


def test_anthropic_sdk_sends_the_opts():
    seen: list[httpx2.Request] = []
    body = (
        b'{"id":"msg","type":"message","role":"assistant","model":"m","content":[],'
        b'"stop_reason":"end_turn","stop_sequence":null,'
        b'"usage":{"input_tokens":1,"output_tokens":1}}'
    )
    client = anthropic.Anthropic(
        api_key="sk-ant-test",
        base_url="https://api.anthropic.test",
        http_client=_capturing_client(seen, body),
    )
    opts = actor_headers_as_anthropic_opts(Actor("user-123", {"Username": "alice"}))
    client.messages.create(
        **opts, model="m", max_tokens=1, messages=[{"role": "user", "content": "x"}]
    )
    assert seen[0].headers["x-ai-bridge-actor-id"] == "user-123"
    assert seen[0].headers["x-ai-bridge-actor-metadata-username"] == "alice"
