"""Request paths in normal form (aibridge.providers.paths), or refused."""

from __future__ import annotations

import pytest

from aibridge.providers.paths import PathError, normal_prefix, normalize, under


@pytest.mark.parametrize(
    ("target", "normal"),
    [
        ("/v1/chat/completions", "/v1/chat/completions"),
        ("/", "/"),
        ("//", "/"),
        ("/v1/chat/completions/", "/v1/chat/completions"),
        ("/v1//chat///completions", "/v1/chat/completions"),
        ("/v1/./chat/./completions/.", "/v1/chat/completions"),
        ("/v1/chat/x/../completions", "/v1/chat/completions"),
        ("/v1/chat%2fcompletions", "/v1/chat/completions"),
        ("/v1%2Fchat%2Fcompletions", "/v1/chat/completions"),
        ("/v1/chat/completions;x", "/v1/chat/completions"),
        ("/v1;a=b/chat;c/completions;d=e;f", "/v1/chat/completions"),
        ("/v1/chat/complet%69ons", "/v1/chat/completions"),  # unreserved: decoded
        ("/v1/files/a%2ejson", "/v1/files/a.json"),
        ("/v1/files/a%3ab%20c", "/v1/files/a%3Ab%20c"),  # reserved: kept, upper-cased
        ("/v1/files/%C3%A9", "/v1/files/%C3%A9"),
        ("/v1/models?after=a/../b;c%2f", "/v1/models?after=a/../b;c%2f"),  # query untouched
        ("/v1/models/?limit=1", "/v1/models?limit=1"),
        ("/v1/models?", "/v1/models?"),
    ],
)
def test_normal_form(target, normal):
    assert normalize(target, "/v1") == normal
    assert normalize(normal, "/v1") == normal  # the normal form is a fixed point


@pytest.mark.parametrize(
    ("target", "base", "message"),
    [
        ("/v1/../admin", "/v1", "climbs out of the provider's base path /v1"),
        ("/openai/v1/../../x", "/openai/v1", "base path"),
        ("/v1/../v1/chat/completions", "/v1", "base path"),  # strict: no way out and back
        ("/../x", "/v1", "above the root"),
        ("/a/../../x", "", "above the root"),
        ("/v1/%2e%2e/admin", "/v1", "escaped dot segment"),
        ("/v1/%2E/x", "/v1", "escaped dot segment"),
        ("/v1/.%2e/x", "/v1", "escaped dot segment"),
        ("/v1/%2e%2e;x/admin", "/v1", "escaped dot segment"),
        ("/v1/x\x00", "/v1", "control characters"),
        ("/v1/x?q=\x00", "/v1", "control characters"),
        ("/v1/x\r\nHost: evil", "/v1", "control characters"),
        ("/v1/x%00", "/v1", "%00"),
        ("/v1/x%0a", "/v1", "%0A"),
        ("/v1\\x", "/v1", "backslash"),
        ("/v1%5Cx", "/v1", "%5C"),
        ("/v1/x%", "/v1", "malformed"),
        ("/v1/x%2", "/v1", "malformed"),
        ("/v1/x%g0", "/v1", "malformed"),
        ("/v1/x#frag", "/v1", "fragment"),
        ("v1/x", "/v1", "must start with '/'"),
        ("", "/v1", "must start with '/'"),
    ],
)
def test_refused(target, base, message):
    with pytest.raises(PathError, match=message.replace("(", r"\(")):
        normalize(target, base)


def test_dot_dot_may_move_within_the_base_path():
    assert normalize("/v1/files/x/../y", "/v1") == "/v1/files/y"
    # Outside the base path only the root bounds it (such a path is unknown to routing anyway).
    assert normalize("/api/x/../y", "/v1") == "/api/y"


@pytest.mark.parametrize(
    ("path", "prefix", "expected"),
    [
        ("/v1/models", "/v1/models", True),
        ("/v1/models/gpt-4o", "/v1/models", True),
        ("/v1/models-x", "/v1/models", False),
        ("/v1/modelsx/y", "/v1/models", False),
        ("/v1/models", "/v1/", True),
        ("/v1", "/v1/", False),  # a trailing slash means strictly below
        ("/v2/x", "/v1/", False),
        ("/anything", "/", True),
        ("/v1/x", "", True),  # an empty base path covers every path
    ],
)
def test_under(path, prefix, expected):
    assert under(path, prefix) is expected


def test_normal_prefix_keeps_the_meaning_of_a_trailing_slash():
    assert normal_prefix("/v1/") == "/v1/"
    assert normal_prefix("/v1//models") == "/v1/models"
    assert normal_prefix("/") == "/"
    with pytest.raises(PathError):
        normal_prefix("/v1/models?x")
