"""The real OpenAI and Anthropic SDKs (sync and async, streaming and not) and curl, through a
real mitmdump with the bridge, against the fake provider."""

from __future__ import annotations

import json

from tests.e2e.harness import ANTHROPIC_KEY, OPENAI_KEY

MESSAGES = [{"role": "user", "content": "Say hello"}]


def assert_bridged(seen, *, auth: tuple[str, str], actor: str = "alice") -> None:
    assert seen.header(auth[0]) == auth[1]
    assert seen.header("X-AI-Bridge-Actor-ID") == actor
    assert seen.header("Proxy-Authorization") is None


def test_openai_chat_sync(bridge, fake):
    client = bridge.openai()
    result = client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert result.choices[0].message.content == "Hello from fake"
    seen = fake.requests[-1]
    assert seen.path == "/v1/chat/completions"
    assert_bridged(seen, auth=("Authorization", f"Bearer {OPENAI_KEY}"))
    assert seen.header("X-AI-Bridge-Actor-Metadata-Team") == "ml"
    assert seen.json()["messages"] == MESSAGES


def test_openai_chat_stream_sync(bridge, fake):
    stream = bridge.openai().chat.completions.create(
        model="gpt-4o", messages=MESSAGES, stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello from fake"
    assert chunks[-1].usage.completion_tokens == 7
    bridge.wait_for_log(r"model=gpt-4o stream=True status=200 .* in 11 out 7 outcome=completed")


async def test_openai_chat_stream_async(bridge, fake):
    client = bridge.async_openai()
    stream = await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES,
                                                  stream=True)
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text == "Hello from fake"
    assert_bridged(fake.requests[-1], auth=("Authorization", f"Bearer {OPENAI_KEY}"))
    await client.close()


def test_openai_responses_sync_and_stream(bridge, fake):
    client = bridge.openai()
    result = client.responses.create(model="gpt-5", input="Say hello")
    assert result.output_text == "Hello from fake"
    with client.responses.stream(model="gpt-5", input="Say hello") as stream:
        final = stream.get_final_response()
    assert final.output_text == "Hello from fake"
    assert [r.path for r in fake.requests[-2:]] == ["/v1/responses", "/v1/responses"]
    bridge.wait_for_log(r"model=gpt-5 stream=True status=200 .* in 11 out 7 outcome=completed")


async def test_openai_responses_async(bridge, fake):
    client = bridge.async_openai()
    result = await client.responses.create(model="gpt-5", input="Say hello")
    assert result.output_text == "Hello from fake"
    await client.close()


def test_anthropic_messages_sync_and_stream(bridge, fake):
    client = bridge.anthropic()
    message = client.messages.create(model="claude-sonnet-5", max_tokens=64, messages=MESSAGES)
    assert message.content[0].text == "Hello from fake"
    with client.messages.stream(model="claude-sonnet-5", max_tokens=64,
                                messages=MESSAGES) as stream:
        final = stream.get_final_message()
    assert final.usage.output_tokens == 7
    for seen in fake.requests[-2:]:
        assert seen.path.startswith("/v1/messages")
        assert_bridged(seen, auth=("X-Api-Key", ANTHROPIC_KEY))
        assert seen.header("anthropic-version") is not None
    bridge.wait_for_log(r"model=claude-sonnet-5 stream=True status=200 .* in 11 out 7 "
                        r"outcome=completed")


async def test_anthropic_messages_async_stream(bridge, fake):
    client = bridge.async_anthropic()
    async with client.messages.stream(model="claude-haiku-5", max_tokens=64,
                                      messages=MESSAGES) as stream:
        text = "".join([t async for t in stream.text_stream])
    assert text == "Hello from fake"
    # The SDK's API key is the proxy token: in auto mode that means "use the central key".
    assert_bridged(fake.requests[-1], auth=("X-Api-Key", ANTHROPIC_KEY))
    await client.close()


def test_curl_chat_and_stream(bridge, fake):
    body = json.dumps({"model": "gpt-4o", "messages": MESSAGES})
    result = bridge.curl("https://api.openai.com/v1/chat/completions",
                         "-H", "Content-Type: application/json", "-d", body)
    assert json.loads(result.stdout)["choices"][0]["message"]["content"] == "Hello from fake"
    stream_body = json.dumps({"model": "gpt-4o", "messages": MESSAGES, "stream": True})
    result = bridge.curl("-N", "https://api.openai.com/v1/chat/completions",
                         "-H", "Content-Type: application/json", "-d", stream_body)
    assert result.stdout.rstrip().endswith("data: [DONE]")
    assert_bridged(fake.requests[-1], auth=("Authorization", f"Bearer {OPENAI_KEY}"))


def test_headers_rebuilt_with_build_upstream_headers_semantics(bridge, fake):
    client = bridge.openai(organization="org-123", project="proj-9")
    client.chat.completions.create(
        model="gpt-4o", messages=MESSAGES,
        extra_headers={
            "X-AI-Bridge-Actor-ID": "mallory",
            "X-AI-Bridge-Actor-Metadata-Role": "admin",
            "X-Forwarded-For": "6.6.6.6",
            "Forwarded": "for=6.6.6.6",
            "Anthropic-Workspace-Id": "wrkspc_stolen",
            "X-Custom": "kept",
            "session_id": "sess-1",
        })
    seen = fake.requests[-1]
    assert seen.header_all("X-AI-Bridge-Actor-ID") == ["alice"]
    assert seen.header("X-AI-Bridge-Actor-Metadata-Role") is None
    for gone in ("X-Forwarded-For", "Forwarded", "Anthropic-Workspace-Id", "Proxy-Connection"):
        assert seen.header(gone) is None, gone
    assert seen.header("OpenAI-Organization") == "org-123"
    assert seen.header("OpenAI-Project") == "proj-9"
    assert seen.header("X-Custom") == "kept"
    assert seen.header("session_id") == "sess-1"
    assert seen.header("User-Agent").startswith("OpenAI/Python")
    assert seen.header("x-stainless-lang") == "python"
    assert seen.header_all("Authorization") == [f"Bearer {OPENAI_KEY}"]


def test_anthropic_headers_pass_verbatim(bridge, fake):
    client = bridge.anthropic()
    client.messages.create(model="claude-sonnet-5", max_tokens=8, messages=MESSAGES,
                           extra_headers={"anthropic-beta": "prompt-caching-2024-07-31",
                                          "X-Claude-Code-Session-Id": "s-42"})
    seen = fake.requests[-1]
    assert seen.header("anthropic-beta") == "prompt-caching-2024-07-31"
    assert seen.header("X-Claude-Code-Session-Id") == "s-42"
    assert seen.header("anthropic-version") == client.default_headers["anthropic-version"]


def test_passthrough_routes_get_the_key_swap(bridge, fake):
    models = bridge.openai().models.list()
    assert models.data
    assert fake.requests[-1].path == "/v1/models"
    assert_bridged(fake.requests[-1], auth=("Authorization", f"Bearer {OPENAI_KEY}"))
    count = bridge.anthropic().messages.count_tokens(model="claude-sonnet-5",
                                                      messages=MESSAGES)
    assert count.input_tokens == 11
    assert_bridged(fake.requests[-1], auth=("X-Api-Key", ANTHROPIC_KEY))
