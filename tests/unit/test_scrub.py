"""upstream.scrub: hints instead of credentials in requests and answers; what `hide` takes out
goes back byte for byte."""

from __future__ import annotations

import gzip
from types import SimpleNamespace

import pytest
from mitmproxy import http
from mitmproxy.test import tflow, tutils

from aibridge.intercept import CredentialInfo, CredentialKind
from aibridge.upstream import scrub

KEY = "sk-ant-api03-personal-key-abcdefgh"  # hint: sk-a...efgh
TOKEN = "sk-ant-oat01-subscription-token-xyz987"  # hint: sk-a...z987


def request(fields: list[tuple[bytes, bytes]], path: str = "/v1/messages") -> http.Request:
    return tutils.treq(host="api.anthropic.com", port=443, scheme=b"https", authority=b"",
                       path=path.encode(), headers=http.Headers(fields))


@pytest.mark.parametrize(("value", "masked"), [
    (KEY, "sk-a...efgh"),
    (f"Bearer {TOKEN}", "Bearer sk-a...z987"),
    (f"bearer   {TOKEN} ", "bearer sk-a...z987"),
    ("Basic ZGV2OnNlY3JldC10b2tlbi0xMjM0NTY=", "Basic ZGV2...NTY="),
    ("short", "s...t"),
    ("abc", "..."),
    ("Bearer a b", "Bearer ..."),
])
def test_hint_keeps_the_scheme_and_masks_the_rest(value, masked):
    assert scrub.hint(value) == masked
    assert scrub.is_masked(masked)


def test_undecodable_bytes_become_an_escaped_hint():
    value = b"sk-\xff\xfe-0123456789abcdef\xff".decode("utf-8", "surrogateescape")
    masked = scrub.hint(value)
    assert masked == "sk-?...def?"  # valid UTF-8: it goes into saved flows and logs
    assert scrub.is_masked(masked)


@pytest.mark.parametrize("value", [KEY, f"Bearer {TOKEN}", "sk-a..efgh", "sk-ab...efgh"])
def test_real_credentials_are_not_taken_for_hints(value):
    assert not scrub.is_masked(value)


def test_hide_then_reveal_gives_back_the_exact_fields():
    fields = [(b"Host", b"api.anthropic.com"), (b"X-Api-Key", KEY.encode()),
              (b"expect", b"100-continue"), (b"authorization", b"Bearer \xff" + TOKEN.encode()),
              (b"x-trace", b"keep"), (b"AUTHORIZATION", f"Bearer {TOKEN}".encode()),
              (b"api-key", b"   ")]
    req = request(fields, "/v1/messages?alt=sse&key=" + KEY)
    hidden = scrub.hide(req)
    assert hidden is not None
    assert KEY.encode() not in bytes(req.headers) and TOKEN.encode() not in bytes(req.headers)
    assert req.headers["x-api-key"] == "sk-a...efgh"
    assert req.headers.get_all("authorization")[1] == "Bearer sk-a...z987"
    assert req.query["key"] == "sk-a...efgh" and req.query["alt"] == "sse"
    assert not scrub.holds_credentials(req)
    req.headers.pop("expect")  # what mitmproxy does with `Expect` between the two hooks
    scrub.reveal(req, hidden)
    assert list(req.headers.fields) == [f for f in fields if f[0] != b"expect"]
    assert req.path == "/v1/messages?alt=sse&key=" + KEY
    assert scrub.holds_credentials(req)


def test_nothing_to_hide():
    req = request([(b"Host", b"api.anthropic.com"), (b"content-type", b"application/json")],
                  "/v1/messages?beta=true")
    before = list(req.headers.fields)
    assert scrub.hide(req) is None
    assert list(req.headers.fields) == before and req.path == "/v1/messages?beta=true"
    assert not scrub.holds_credentials(req)


def test_mask_request_returns_the_secrets_once():
    req = request([(b"x-api-key", KEY.encode()), (b"authorization", f"Bearer {TOKEN}".encode()),
                   (b"x-goog-api-key", b"AIzaSy-gemini-key-0123456789"),
                   (b"proxy-authorization", b"Basic ZGV2OnNlY3JldC10b2tlbi0xMjM0NTY=")],
                  "/x?key=AIzaSy-query-key-0123456789")
    assert scrub.mask_request(req) == [KEY, TOKEN, "AIzaSy-gemini-key-0123456789",
                                       "ZGV2OnNlY3JldC10b2tlbi0xMjM0NTY=",
                                       "AIzaSy-query-key-0123456789"]
    assert scrub.mask_request(req) == []  # hints stay as they are
    assert req.headers["x-goog-api-key"] == "AIza...6789"
    assert req.query["key"] == "AIza...6789"


def test_mask_flow_covers_mitmproxys_proxyauth_metadata():
    flow = tflow.tflow()
    flow.metadata["proxyauth"] = ("alice", "alice-proxy-token-1234")
    assert scrub.mask_flow(flow) == ["alice-proxy-token-1234"]
    assert flow.metadata["proxyauth"] == ("alice", "alic...1234")


def echoing(body: bytes, **headers: str) -> http.Response:
    return tutils.tresp(status_code=401, content=body, headers=http.Headers(**{
        "content-type": "application/json", "content-length": str(len(body)), **headers}))


def test_redact_replaces_an_echoed_key_in_body_and_headers():
    response = echoing(b'{"error":{"message":"Incorrect API key provided: ' + KEY.encode()
                       + b'."}}', www_authenticate=f"Bearer realm=x key={KEY}")
    scrub.redact(response, [KEY])
    assert KEY.encode() not in response.raw_content
    assert b"Incorrect API key provided: sk-a...efgh." in response.content
    assert response.headers["www-authenticate"] == "Bearer realm=x key=sk-a...efgh"
    assert response.headers["content-length"] == str(len(response.raw_content))


def test_redact_reencodes_a_compressed_body():
    response = echoing(gzip.compress(b"bad key " + KEY.encode()), content_encoding="gzip")
    scrub.redact(response, [KEY])
    assert response.get_content() == b"bad key sk-a...efgh"
    assert KEY.encode() not in gzip.decompress(response.raw_content)


def test_redact_works_on_the_raw_bytes_when_the_encoding_does_not_decode():
    response = echoing(b"not gzip at all " + KEY.encode(), content_encoding="gzip")
    scrub.redact(response, [KEY])
    assert response.raw_content == b"not gzip at all sk-a...efgh"
    assert response.headers["content-length"] == str(len(response.raw_content))


def test_redact_leaves_short_secrets_and_streamed_bodies():
    response = echoing(b'{"ok":"abc"}')
    scrub.redact(response, ["abc"])
    assert response.content == b'{"ok":"abc"}'
    streamed = echoing(b"")
    streamed.raw_content = None
    scrub.redact(streamed, [KEY])
    scrub.redact(None, [KEY])


def test_sent_secrets_are_the_first_key_and_the_last_attempt():
    byok = SimpleNamespace(value=f"Bearer {TOKEN}", attempt=None)
    assert scrub.sent_secrets(byok) == [TOKEN]
    central = SimpleNamespace(value="sk-first", attempt=SimpleNamespace(
        last=SimpleNamespace(secret="sk-second")))
    assert scrub.sent_secrets(central) == ["sk-first", "sk-second"]
    assert scrub.sent_secrets(None) == []


@pytest.mark.parametrize("fields", [
    [(b"Authorization", b"Bearer " + KEY.encode()), (b"Accept", b"*/*")],
    [(b"accept", b"*/*"), (b"authorization", KEY.encode())],
    [(b"AUTHORIZATION", b"AWS4-HMAC-SHA256 Credential=AKIAEXAMPLE/x, Signature=ab")],
    [(b"Authorization", b"Bearer a"), (b"authorization", b"Bearer b")],  # twice
    [(b"Authorization", b"Bearer " + KEY.encode()), (b"X-Amz-Security-Token", b"session-tok")],
    [(b"X-Amz-Security-Token", b"s...n")],  # a hint already
    [(b"Accept", b"*/*")],  # nothing to scrub
    [(b"Authorization", b"Bearer caf\xc3\xa9-\xff-key")],  # odd bytes
])
@pytest.mark.parametrize("header", ["Authorization", "authorization"])
@pytest.mark.parametrize("with_info", [True, False])
def test_scrub_in_one_pass_does_what_the_lookups_do(fields, header, with_info):
    """The one-pass scrub (the bridge's own header, alone) and the general one agree on every
    request, odd ones included."""
    info = CredentialInfo(CredentialKind.CENTRALIZED, "sk-c...cdef", 33) if with_info else None
    fast, general = request(list(fields)), request(list(fields))
    scrub.scrub(fast, header, info)
    scrub._scrub(general, header, info)
    assert fast.headers.fields == general.headers.fields
