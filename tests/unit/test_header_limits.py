"""HeaderLimits: heads over 64 KiB, and header values with CR, LF or NUL, never go upstream."""

from __future__ import annotations

from typing import Any

import pytest
from mitmproxy.test import tutils

from aibridge.admission.steps import MAX_HEAD_BYTES, HeaderLimits
from aibridge.intercept import ResponseError


class _Candidate:  # the one field the step reads
    def __init__(self, fields: list[tuple[bytes, bytes]]) -> None:
        self.request = tutils.treq()
        self.request.headers.fields = tuple(fields)


def _admit(fields: list[tuple[bytes, bytes]]) -> Any:
    return HeaderLimits().admit(_Candidate(fields))  # type: ignore[arg-type]


def test_ordinary_heads_pass() -> None:
    assert _admit([(b"Host", b"api.openai.com"), (b"User-Agent", b"curl/8\xff odd byte")]) is None


@pytest.mark.parametrize("value", [b"a\rb", b"a\nb", b"a\x00b", b"\r\n"])
def test_control_characters_in_a_value_are_refused(value: bytes) -> None:
    with pytest.raises(ResponseError) as refused:
        _admit([(b"Host", b"api.openai.com"), (b"X-Thing", value)])
    assert refused.value.status == 400 and "CR, LF or NUL" in refused.value.message


def test_a_head_over_the_limit_is_refused() -> None:
    with pytest.raises(ResponseError) as refused:
        _admit([(b"X-Big", b"x" * MAX_HEAD_BYTES)])
    assert refused.value.status == 431
    assert _admit([(b"X-Big", b"x" * (MAX_HEAD_BYTES - 10))]) is None
