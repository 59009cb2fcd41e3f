"""No credential stays in a flow: saved flows (`-w`), HAR files, mitmweb and logs only ever see
masked hints (`sk-a...efgh`, `Bearer sk-a...efgh`).

One set of functions serves every path a flow takes:
- `hide` / `reveal`: a request waiting for its body shows hints (mitmweb lists a flow as soon
  as its headers arrive); the real values go back just before the request is forwarded.
- `scrub`: the key the bridge sent, replaced by its hint once the request is on the wire.
- `mask_flow`: every credential a flow still holds (headers, URL query, proxy credentials in
  its metadata), at its end: answered, refused, failed, killed, or in flight at shutdown.
- `redact`: an answer that echoes a key back (OpenAI's "Incorrect API key provided: sk-...")
  gets the hint instead, before the client, the flow or a log line sees it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from mitmproxy import http

from aibridge.admission.credential import UpstreamCredential
from aibridge.intercept import CredentialInfo, mask_secret

# Where clients and the bridge put credentials: provider keys (OpenAI and OAuth bearer tokens,
# Anthropic, Gemini, Azure OpenAI) and proxy credentials.
CREDENTIAL_HEADERS = frozenset({
    b"authorization", b"proxy-authorization", b"x-api-key", b"x-goog-api-key", b"api-key",
    b"x-amz-security-token"})  # an AWS session token signs with its secret key
# Gemini's `?key=`; AWS presigned URLs (the signature and the session token).
CREDENTIAL_QUERY = frozenset({"key", "api_key", "api-key", "x-amz-signature",
                              "x-amz-security-token"})
# Shorter secrets are not searched for in answers: replacing a few common characters could
# corrupt the body, and nothing that short is a provider key.
MIN_ECHOED = 8

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9!#$%&'*+.^_`|~-]*")
SIGV4 = "AWS4-HMAC-SHA256"
_SIGV4_KEY = re.compile(r"Credential=([^/,\s]*)")
# What `mask_secret` makes: the secret's ends around "...", 4, 2, 1 or no characters each.
_HINT = re.compile(r"(?:\S+ )?(?:.{4}\.\.\..{4}|.{2}\.\.\..{2}|.\.\.\..|\.\.\.)", re.S)


def _mask(secret: str) -> str:
    # Undecodable bytes arrive as lone surrogates: one "?" each keeps the hint valid UTF-8
    # and of the shape `is_masked` knows.
    return mask_secret(secret).encode("utf-8", "replace").decode("utf-8")


def hint(value: str) -> str:
    """`value` masked, its auth scheme kept: `Bearer sk-a...efgh`, `sk-a...efgh`. An AWS
    signature shows its scheme and the access key id masked: `AWS4-HMAC-SHA256 AKIA...MPLE`."""
    scheme, sep, credential = value.strip().partition(" ")
    if scheme == SIGV4 and (found := _SIGV4_KEY.search(credential)):
        return f"{scheme} {_mask(found[1])}"
    if sep and credential.strip() and _SCHEME.fullmatch(scheme):
        return f"{scheme} {_mask(credential.strip())}"
    return _mask(value)


def is_masked(value: str) -> bool:
    """A hint already: masking it again would only hide what the hint shows."""
    return _HINT.fullmatch(value) is not None


def _credential(value: str) -> str:
    """The secret part of a header value (what an answer would echo): no auth scheme."""
    scheme, sep, credential = value.strip().partition(" ")
    if sep and credential.strip() and _SCHEME.fullmatch(scheme):
        return credential.strip()
    return value


# -- the request ----------------------------------------------------------------------------------


@dataclass
class Hidden:
    """The credentials `hide` took out of one request, until `reveal` puts them back."""

    fields: list[tuple[bytes, bytes, bytes]]  # header name, hint, original value
    path: tuple[str, str] | None = None  # request path with hints, the original path


def _masked_fields(fields: tuple[tuple[bytes, bytes], ...]
                   ) -> tuple[list[tuple[bytes, bytes]], list[tuple[bytes, bytes, bytes]]]:
    new: list[tuple[bytes, bytes]] = []
    changed: list[tuple[bytes, bytes, bytes]] = []
    for name, value in fields:
        if name.lower() in CREDENTIAL_HEADERS:
            text = value.decode("utf-8", "surrogateescape")
            if text.strip() and not is_masked(text):
                masked = hint(text).encode("utf-8", "surrogateescape")
                changed.append((name, masked, value))
                value = masked
        new.append((name, value))
    return new, changed


def _masked_query(request: http.Request) -> tuple[tuple[str, str], list[str]] | None:
    """Credentials in the query replaced by hints: ((masked path, original path), secrets)."""
    path = request.path
    if "?" not in path:
        return None
    query = request.query.fields
    secrets = [value for name, value in query
               if name.lower() in CREDENTIAL_QUERY and value and not is_masked(value)]
    if not secrets:
        return None
    masked = [(name, hint(value) if name.lower() in CREDENTIAL_QUERY and value
               and not is_masked(value) else value) for name, value in query]
    request.query = masked  # type: ignore[assignment]  # mitmproxy takes a list of pairs
    return (request.path, path), secrets


def hide(request: http.Request) -> Hidden | None:
    """Replace the request's credentials by hints, keeping the originals to `reveal`."""
    fields, changed = _masked_fields(request.headers.fields)
    if changed:
        request.headers.fields = tuple(fields)
    query = _masked_query(request)
    path = query[0] if query is not None else None
    return Hidden(changed, path) if changed or path else None


def reveal(request: http.Request, hidden: Hidden) -> None:
    """Put back what `hide` took, so that the request goes out as the client sent it."""
    pending = list(hidden.fields)
    fields = []
    for name, value in request.headers.fields:
        for i, (hidden_name, masked, original) in enumerate(pending):
            if name == hidden_name and value == masked:
                value = original
                del pending[i]
                break
        fields.append((name, value))
    if len(pending) < len(hidden.fields):
        request.headers.fields = tuple(fields)
    if hidden.path is not None and request.path == hidden.path[0]:
        request.path = hidden.path[1]


def holds_credentials(request: http.Request) -> bool:
    """Whether any credential in the request is not a hint (yet)."""
    for name, value in request.headers.fields:
        if name.lower() in CREDENTIAL_HEADERS:
            text = value.decode("utf-8", "surrogateescape")
            if text.strip() and not is_masked(text):
                return True
    if "?" not in request.path:
        return False
    return any(name.lower() in CREDENTIAL_QUERY and value and not is_masked(value)
               for name, value in request.query.fields)


def mask_request(request: http.Request) -> list[str]:
    """Mask every credential the request still holds; returns the secrets it removed."""
    fields, changed = _masked_fields(request.headers.fields)
    secrets = [_credential(original.decode("utf-8", "surrogateescape"))
               for _, _, original in changed]
    if changed:
        request.headers.fields = tuple(fields)
    if (query := _masked_query(request)) is not None:
        secrets += query[1]
    return secrets


def mask_flow(flow: http.HTTPFlow) -> list[str]:
    """`mask_request`, and the password mitmproxy's own `proxyauth` keeps in the metadata."""
    secrets = mask_request(flow.request)
    auth = flow.metadata.get("proxyauth")
    if isinstance(auth, (tuple, list)) and len(auth) == 2 and isinstance(auth[1], str) \
            and auth[1] and not is_masked(auth[1]):
        secrets.append(auth[1])
        flow.metadata["proxyauth"] = (auth[0], _mask(auth[1]))
    return secrets


def scrub(request: http.Request, header: str, info: CredentialInfo | None) -> None:
    """The key the bridge sent in `header`, replaced by its hint (after a failover, the hint of
    the key that answered)."""
    # As good as always the request holds the one header the bridge set and no session token:
    # one pass over the raw fields, instead of the four lookups below.
    fields = request.headers.fields
    wanted, at = header.encode("utf-8", "surrogateescape").lower(), -1
    for i, (name, _) in enumerate(fields):
        lowered = name.lower()
        if lowered == wanted and at == -1:
            at = i
        elif lowered == wanted or lowered == b"x-amz-security-token":
            _scrub(request, header, info)
            return
    if info is not None and at >= 0:
        name, value = fields[at]
        masked = _scrubbed(value.decode("utf-8", "surrogateescape"), info)
        request.headers.fields = (*fields[:at], (name, masked.encode("utf-8", "surrogateescape")),
                                  *fields[at + 1:])


def _scrubbed(value: str, info: CredentialInfo) -> str:
    if value.startswith(SIGV4 + " "):
        return f"{SIGV4} {info.hint}"
    return f"Bearer {info.hint}" if value.startswith("Bearer ") else info.hint


def _scrub(request: http.Request, header: str, info: CredentialInfo | None) -> None:
    """`scrub` for any request: the header several times, a session token."""
    if info is not None and header in request.headers:
        request.headers[header] = _scrubbed(request.headers[header], info)
    if (token := request.headers.get("x-amz-security-token")) and not is_masked(token):
        request.headers["x-amz-security-token"] = _mask(token)  # it went with a signature


# -- the answer -----------------------------------------------------------------------------------


def sent_secrets(credential: UpstreamCredential | None) -> list[str]:
    """What the bridge sent upstream for a request: the first key and, after a failover, the
    key of the last attempt."""
    if credential is None:
        return []
    secrets = [_credential(credential.value)]
    if credential.attempt is not None and credential.attempt.last is not None:
        secrets.append(credential.attempt.last.secret)
    return secrets


def _replace(data: bytes, pairs: list[tuple[bytes, bytes]]) -> bytes:
    for secret, masked in pairs:
        if secret in data:
            data = data.replace(secret, masked)
    return data


def redact(response: http.Response | None, secrets: Iterable[str]) -> None:
    """Every secret the answer echoes (header values, body) replaced by its hint. A streamed
    body the flow does not keep is left alone (the SSE tap never changes a byte)."""
    if response is None:
        return
    # Longest first: a secret that contains another one is replaced whole.
    pairs = [(s.encode("utf-8", "surrogateescape"), _mask(s).encode())
             for s in sorted(set(secrets), key=len, reverse=True) if len(s) >= MIN_ECHOED]
    if not pairs:
        return
    fields = [(name, _replace(value, pairs)) for name, value in response.headers.fields]
    if fields != list(response.headers.fields):
        response.headers.fields = tuple(fields)
    raw = response.raw_content
    if not raw:
        return
    try:
        content = response.get_content(strict=True)
    except ValueError:  # an encoding that does not decode: the raw bytes are what is kept
        content = None
    if content is not None:
        cleaned = _replace(content, pairs)
        if cleaned != content:
            response.content = cleaned  # re-encoded, Content-Length updated
        return
    cleaned = _replace(raw, pairs)
    if cleaned != raw:
        response.raw_content = cleaned
        if "content-length" in response.headers:
            response.headers["content-length"] = str(len(cleaned))
