"""Request paths in one normal form before they are routed, or a refusal.

A path the bridge reads one way and the provider (or a gateway in front of it) another is a way
around the bridge: `/v1/chat/completions/`, `/v1/./chat/completions`, `/v1/chat%2fcompletions`
or `/v1/chat/completions;x` would otherwise pass as passthroughs, without the size limit, the
circuit breaker or a record, and `/v1/../admin` would carry a central key out of the provider's
API. So a path is brought to one form, routed on that form, and sent upstream in that form: the
provider then receives exactly what was routed. A path without a single safe reading is refused.

The normal form: no dot segments, no empty segments (duplicate or trailing slashes), no `;`
parameters, `%2F` decoded to `/`, escapes of unreserved characters decoded and the others
written in upper case. Refused: control characters (NUL included, raw or `%00`), a backslash
(raw or `%5C`: some servers read it as `/`), a fragment, a malformed escape, an escaped dot
segment (`%2e%2e`: one server resolves it, another does not), and `..` that climbs out of the
base path (or above the root). The query is left as it is; routing never looks at it.

Written out rather than left to `posixpath.normpath` and `urllib.parse.unquote`: normpath keeps a
leading `//` and silently stops `..` at the root (where a refusal is due), and unquote decodes
every escape, where only unreserved characters and `/` may be.
"""

from __future__ import annotations

import re
import string

_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_ENCODED_SLASH = re.compile(r"%2[fF]")
_UNRESERVED = frozenset(string.ascii_letters + string.digits + "-._~")
# Escapes that decode to something refused raw: NUL and the other controls, backslash.
_REFUSED_ESCAPES = frozenset({*(f"{n:02X}" for n in range(0x20)), "7F", "5C"})


class PathError(ValueError):
    """The path cannot be normalised safely; the message says why (safe to show the client)."""


def normalize(target: str, base_path: str = "", *, slash_escapes: bool = False) -> str:
    """`target` (path and query, as in the request line) in normal form. `..` may not climb out
    of `base_path` when the path starts under it, nor above the root. Raises PathError.

    `slash_escapes`: `%2F` stays an escape inside its segment instead of becoming `/`, for APIs
    whose path parameters may hold a slash (Bedrock's model ARNs); the API then reads it as
    part of the segment, as the bridge does."""
    path, sep, query = target.partition("?")
    if not path.startswith("/"):
        raise PathError("the path must start with '/'")
    if any(c < " " or c == "\x7f" for c in target):
        raise PathError("control characters (NUL included) are not allowed in a path")
    if "\\" in path:
        raise PathError("a backslash is not allowed in a path")
    if "#" in path:
        raise PathError("a fragment ('#') is not allowed in a request path")
    if _BAD_ESCAPE.search(path):
        raise PathError("malformed percent-escape in the path")
    for hex_ in _ESCAPE.findall(path):
        if hex_.upper() in _REFUSED_ESCAPES:
            raise PathError(f"escaped %{hex_.upper()} (a control character or a backslash) "
                            "is not allowed in a path")
    if not slash_escapes:
        path = _ENCODED_SLASH.sub("/", path)
    segments = [_segment(raw) for raw in path.split("/")[1:]]
    segments = [s for s in segments if s not in ("", ".")]
    base = [s for s in base_path.split("/") if s]
    floor = len(base) if segments[:len(base)] == base else 0
    resolved: list[str] = []
    for segment in segments:
        if segment != "..":
            resolved.append(segment)
        elif len(resolved) > floor:
            resolved.pop()
        elif floor:
            raise PathError(f"'..' climbs out of the provider's base path {base_path}")
        else:
            raise PathError("'..' climbs above the root")
    return "/" + "/".join(resolved) + sep + query


def _segment(raw: str) -> str:
    """One segment without its `;` parameters, unreserved escapes decoded."""
    bare = raw.split(";", 1)[0]
    decoded = _ESCAPE.sub(_unescape, bare)
    if decoded in (".", "..") and decoded != bare:
        raise PathError("an escaped dot segment ('%2e') is ambiguous: send '.' or '..', or "
                        "better, the path without them")
    return decoded


def _unescape(match: re.Match[str]) -> str:
    char = chr(int(match[1], 16))
    return char if char in _UNRESERVED else "%" + match[1].upper()


def under(path: str, prefix: str) -> bool:
    """Whether `path` (normal form, no query) falls under `prefix`: a prefix ending in `/` covers
    what lies strictly below it, one without covers itself and what lies below it, never a
    sibling that merely starts with the same letters (`/v1/models` is not `/v1/models-x`)."""
    if prefix.endswith("/"):
        return path.startswith(prefix)
    return path == prefix or path.startswith(prefix + "/")


def normal_prefix(prefix: str) -> str:
    """A configured prefix (passthrough, untouched, deny) in the form `under` compares with;
    a trailing `/` is kept, since it means "strictly below". Raises PathError."""
    if "?" in prefix:
        raise PathError("a path prefix has no query")
    normal = normalize(prefix)
    return normal + "/" if prefix.endswith("/") and normal != "/" else normal
