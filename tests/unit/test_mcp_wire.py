"""Each API's side of the MCP tool loop (providers/*_tools.py): the tools appended to a request,
the follow-up request, the merged whole answer and the spliced stream, checked against the fake
provider's real event shapes (tests/fakeprovider.py)."""

from __future__ import annotations

import json

import pytest

from aibridge.providers.anthropic_messages import MESSAGES
from aibridge.providers.openai_chat import CHAT_COMPLETIONS
from aibridge.providers.openai_responses import RESPONSES
from aibridge.providers.tooluse import ToolRun, ToolSpec, sum_usage
from aibridge.sse import SSEParser
from aibridge.summary import ToolCall
from tests.fakeprovider import TEXT, _chat, _messages, _responses, tool_call_reply

SPEC = ToolSpec("bmcp_docs_search", "Search the docs.", {
    "$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object",
    "properties": {"query": {"type": "string"}}, "required": ["query"]})
RUN = ToolRun(ToolCall("call_fake1", "bmcp_docs_search", '{"query":"build"}'), "found it")


def ours(name: str) -> bool:
    return name.startswith("bmcp_")


def events(stream: bytes) -> list[tuple[str | None, dict | str]]:
    out = []
    for e in SSEParser().feed(stream):
        try:
            out.append((e.event, json.loads(e.data)))
        except ValueError:
            out.append((e.event, e.data))
    return out


def splice(api, path: str, *, text: str | None = None, second: bytes | None = None,
           request: dict | None = None) -> tuple[bytes, list[dict]]:
    """Round one calls the bridge tool, round two is the fake's default answer."""
    splicer = api.tool_wire().splicer(ours)
    first = tool_call_reply(path, "bmcp_docs_search", {"query": "build"}, stream=True,
                            text=text)
    req = {"stream": True, **(request or {})}
    builder = {"/v1/messages": _messages, "/v1/chat/completions": _chat,
               "/v1/responses": _responses}[path]
    rounds = [b"".join(e.encode() for e in first.events),
              second or b"".join(e.encode() for e in builder(2, req, "").events)]
    out, answers = b"", []
    for data in rounds:
        for e in SSEParser().feed_raw(data):
            out += splicer.event(e[0], e[1])
        answers.append(splicer.end_round())
    return out + splicer.finish(dropped_calls=False), answers


# -- injection -------------------------------------------------------------------------------


def test_messages_tools_are_appended_and_breakpoints_stay():
    own = {"name": "Bash", "input_schema": {"type": "object"},
           "cache_control": {"type": "ephemeral"}}
    body = {"messages": [], "tools": [own]}
    assert MESSAGES.tool_wire().inject(body, [SPEC])
    assert body["tools"][0] is own
    assert body["tools"][1] == {"name": "bmcp_docs_search", "description": "Search the docs.",
                                "input_schema": {"type": "object", "properties": {
                                    "query": {"type": "string"}}, "required": ["query"]}}


@pytest.mark.parametrize(("api", "body"), [
    (MESSAGES, {"tool_choice": {"type": "tool", "name": "Bash"}}),
    (MESSAGES, {"tool_choice": {"type": "none"}}),
    (MESSAGES, {"tools": "not a list"}),
    (CHAT_COMPLETIONS, {"tool_choice": {"type": "function", "function": {"name": "f"}}}),
    (CHAT_COMPLETIONS, {"tool_choice": "none"}),
    (CHAT_COMPLETIONS, {"n": 2}),
    (CHAT_COMPLETIONS, {"functions": [{"name": "f"}]}),
    (RESPONSES, {"tool_choice": {"type": "function", "name": "f"}}),
    (RESPONSES, {"tool_choice": "none"}),
    (RESPONSES, {"background": True}),
])
def test_requests_that_name_their_tool_choice_are_left_alone(api, body):
    before = json.dumps(body)
    assert not api.tool_wire().inject(body, [SPEC])
    assert json.dumps(body) == before


@pytest.mark.parametrize("choice", [None, "auto", "required", {"type": "any"}])
def test_auto_and_required_choices_get_the_tools(choice):
    body = {} if choice is None else {"tool_choice": choice}
    api = MESSAGES if isinstance(choice, dict) else CHAT_COMPLETIONS
    assert api.tool_wire().inject(body, [SPEC])


def test_openai_formats():
    chat, responses = {}, {"tools": [{"type": "web_search"}]}
    assert CHAT_COMPLETIONS.tool_wire().inject(chat, [SPEC])
    assert chat["tools"] == [{"type": "function", "function": {
        "name": "bmcp_docs_search", "description": "Search the docs.",
        "parameters": {"type": "object", "properties": {"query": {"type": "string"}},
                       "required": ["query"]}}}]
    assert RESPONSES.tool_wire().inject(responses, [SPEC])
    assert responses["tools"][1] == {
        "type": "function", "name": "bmcp_docs_search", "description": "Search the docs.",
        "parameters": {"type": "object", "properties": {"query": {"type": "string"}},
                       "required": ["query"]}, "strict": False}


def test_a_client_tool_of_the_same_name_wins():
    body = {"tools": [{"name": "bmcp_docs_search", "input_schema": {"type": "object"}}]}
    assert not MESSAGES.tool_wire().inject(body, [SPEC])


# -- follow-ups and whole answers -------------------------------------------------------------


def test_follow_ups_append_the_turn_and_the_results():
    for api, path in ((MESSAGES, "/v1/messages"), (CHAT_COMPLETIONS, "/v1/chat/completions"),
                      (RESPONSES, "/v1/responses")):
        wire = api.tool_wire()
        answer = tool_call_reply(path, "bmcp_docs_search", {"query": "build"},
                                 stream=False).body
        assert [(c.id, c.name, json.loads(c.arguments)) for c in wire.calls(answer)] == [
            ("call_fake1", "bmcp_docs_search", {"query": "build"})]
        body = ({"input": "hi"} if api is RESPONSES
                else {"messages": [{"role": "user", "content": "hi"}]})
        nxt = wire.follow_up(body, answer, [RUN])
        if api is MESSAGES:
            assert nxt["messages"][1] == {"role": "assistant", "content": answer["content"]}
            assert nxt["messages"][2]["content"] == [
                {"type": "tool_result", "tool_use_id": "call_fake1", "content": "found it"}]
        elif api is CHAT_COMPLETIONS:
            assert nxt["messages"][1]["tool_calls"][0]["function"]["name"] == "bmcp_docs_search"
            assert nxt["messages"][2] == {"role": "tool", "tool_call_id": "call_fake1",
                                          "content": "found it"}
        else:
            assert nxt["input"][0] == {"role": "user", "content": "hi"}
            assert nxt["input"][1]["type"] == "function_call"
            assert nxt["input"][2] == {"type": "function_call_output", "call_id": "call_fake1",
                                       "output": "found it"}
        assert body != nxt  # the request it came from is not changed


def test_an_error_result_says_so_on_messages():
    run = ToolRun(RUN.call, "timed out", is_error=True)
    nxt = MESSAGES.tool_wire().follow_up({"messages": []}, {"content": []}, [run])
    assert nxt["messages"][-1]["content"][0]["is_error"] is True


@pytest.mark.parametrize(("api", "path", "builder"), [
    (MESSAGES, "/v1/messages", _messages), (CHAT_COMPLETIONS, "/v1/chat/completions", _chat),
    (RESPONSES, "/v1/responses", _responses)])
def test_merge_keeps_what_was_said_and_sums_usage(api, path, builder):
    first = tool_call_reply(path, "bmcp_docs_search", {"query": "q"}, stream=False,
                            text="Looking.").body
    second = builder(2, {}, "").body
    merged = api.tool_wire().merge([first, second], ours, dropped_calls=False)
    assert "bmcp_" not in json.dumps(merged)
    if api is MESSAGES:
        assert [b["text"] for b in merged["content"]] == ["Looking.", TEXT]
        assert merged["usage"]["input_tokens"] == 22 and merged["usage"]["output_tokens"] == 12
    elif api is CHAT_COMPLETIONS:
        assert merged["choices"][0]["message"]["content"] == "Looking." + TEXT
        assert merged["usage"]["prompt_tokens"] == 22
    else:
        texts = [p["text"] for i in merged["output"] for p in i.get("content", [])]
        assert texts == ["Looking.", TEXT] and merged["usage"]["output_tokens"] == 12
        assert merged["id"] == second["id"]  # a later previous_response_id sees it all


def test_merge_of_a_loop_that_ran_out_says_the_turn_ended():
    first = tool_call_reply("/v1/messages", "bmcp_docs_search", {}, stream=False).body
    merged = MESSAGES.tool_wire().merge([first], ours, dropped_calls=True)
    assert merged["content"] == [] and merged["stop_reason"] == "end_turn"
    chat = tool_call_reply("/v1/chat/completions", "bmcp_docs_search", {}, stream=False).body
    merged = CHAT_COMPLETIONS.tool_wire().merge([chat], ours, dropped_calls=True)
    assert "tool_calls" not in merged["choices"][0]["message"]
    assert merged["choices"][0]["finish_reason"] == "stop"


def test_sum_usage_adds_nested_counts_and_keeps_the_rest():
    assert sum_usage({"a": 1, "d": {"x": 2}, "tier": "standard", "n": None},
                     {"a": 2, "d": {"x": 3, "y": 1}, "tier": "priority", "n": 4}) == {
        "a": 3, "d": {"x": 5, "y": 1}, "tier": "priority", "n": 4}


# -- spliced streams -------------------------------------------------------------------------


def test_messages_stream_splices_into_one_message():
    out, answers = splice(MESSAGES, "/v1/messages", text="Looking.")
    got = events(out)
    kinds = [obj["type"] for _, obj in got]
    assert kinds.count("message_start") == 1 and kinds[-2:] == ["message_delta", "message_stop"]
    assert "bmcp_" not in out.decode()
    starts = [obj["index"] for _, obj in got if obj["type"] == "content_block_start"]
    assert starts == [0, 1]  # the held tool block left no gap
    delta = got[-2][1]
    assert delta["delta"]["stop_reason"] == "end_turn"
    assert delta["usage"]["input_tokens"] == 22 and delta["usage"]["output_tokens"] == 12
    # Round one's answer, rebuilt from its events, is what the follow-up hands back.
    assert answers[0]["content"][-1] == {"type": "tool_use", "id": "call_fake1",
                                         "name": "bmcp_docs_search",
                                         "input": {"query": "build"}}
    assert answers[0]["content"][0] == {"type": "text", "text": "Looking."}


def test_chat_stream_splices_into_one_completion():
    out, answers = splice(CHAT_COMPLETIONS, "/v1/chat/completions",
                          request={"stream_options": {"include_usage": True}})
    got = events(out)
    assert got[-1] == (None, "[DONE]") and [g for g in got if g[1] == "[DONE]"] == [got[-1]]
    chunks = [obj for _, obj in got[:-1]]
    assert {c["id"] for c in chunks} == {"chatcmpl-tool1"}
    assert "bmcp_" not in out.decode()
    reasons = [c["choices"][0]["finish_reason"] for c in chunks
               if c["choices"] and c["choices"][0]["finish_reason"]]
    assert reasons == ["stop"]
    assert chunks[-1]["usage"]["prompt_tokens"] == 22 and chunks[-1]["choices"] == []
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == TEXT
    call = answers[0]["choices"][0]["message"]["tool_calls"][0]
    assert call == {"id": "call_fake1", "type": "function", "function": {
        "name": "bmcp_docs_search", "arguments": '{"query":"build"}'}}


def test_responses_stream_splices_into_one_response():
    out, answers = splice(RESPONSES, "/v1/responses", text="Looking.")
    got = [obj for _, obj in events(out)]
    assert [g["sequence_number"] for g in got] == list(range(len(got)))
    kinds = [g["type"] for g in got]
    assert kinds.count("response.created") == 1 and kinds[-1] == "response.completed"
    assert "bmcp_" not in out.decode()
    final = got[-1]["response"]
    assert final["id"] == got[0]["response"]["id"]  # SDKs refuse a changed id
    assert [p["text"] for i in final["output"] for p in i["content"]] == ["Looking.", TEXT]
    assert final["usage"]["input_tokens"] == 22
    added = [g["output_index"] for g in got if g["type"] == "response.output_item.added"]
    assert added == [0, 1]
    assert answers[0]["output"][-1]["name"] == "bmcp_docs_search"


def test_a_client_tool_in_the_stream_keeps_its_place():
    wire = MESSAGES.tool_wire()
    splicer = wire.splicer(ours)
    first = tool_call_reply("/v1/messages", "bmcp_docs_search", {"query": "x"}, stream=True)
    own = tool_call_reply("/v1/messages", "Bash", {"command": "ls"}, stream=True,
                          call_id="toolu_own")
    # Round one: the bridge's call at index 0, the client's at index 1.
    data = b"".join(e.encode() for e in first.events[:-2])
    data += b"".join(e.encode().replace(b'"index":0', b'"index":1')
                     for e in own.events[1:-2])
    data += b"".join(e.encode() for e in first.events[-2:])
    out = b"".join(splicer.event(e[0], e[1]) for e in SSEParser().feed_raw(data))
    answer = splicer.end_round()
    assert [c.name for c in wire.calls(answer)] == ["bmcp_docs_search", "Bash"]
    out += splicer.finish(dropped_calls=True)
    got = [obj for _, obj in events(out)]
    starts = [(g["index"], g["content_block"]["name"]) for g in got
              if g["type"] == "content_block_start"]
    assert starts == [(0, "Bash")]
    assert got[-2]["delta"]["stop_reason"] == "tool_use"  # the client has a call to run


def test_a_spliced_responses_stream_is_continued_from_its_last_round():
    splicer = RESPONSES.tool_wire().splicer(ours)
    first = tool_call_reply("/v1/responses", "bmcp_docs_search", {}, stream=True)
    second = _responses(7, {"stream": True}, "")
    for reply in (first, second):
        for e in SSEParser().feed_raw(b"".join(x.encode() for x in reply.events)):
            splicer.event(e[0], e[1])
        splicer.end_round()
    assert splicer.alias() == ("resp_tool1", "resp_fake7")
    body = {"previous_response_id": "resp_tool1", "input": "and then?"}
    assert RESPONSES.tool_wire().rechain(body, {"resp_tool1": "resp_fake7"}.get)
    assert body["previous_response_id"] == "resp_fake7"
    assert not RESPONSES.tool_wire().rechain({"previous_response_id": "resp_x"}, {}.get)
    assert not MESSAGES.tool_wire().rechain({}, {}.get)
