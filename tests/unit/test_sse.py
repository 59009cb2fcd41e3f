import gzip
import zlib

import brotli
import pytest
import zstandard

from aibridge.sse import BodyDecoder, SSEEvent, SSEParser, decode_body

STREAM = (
    b": keep-alive comment\n"
    b"event: message_start\n"
    b'data: {"a": 1}\n'
    b"\n"
    b"id: 7\n"
    b"data: line one\n"
    b"data:line two\n"
    b"data:  two spaces\n"
    b"\n"
    b"event: ping\n"
    b"\n"
    b"data: Z\xc3\xbcrich \xe2\x98\x80\xef\xb8\x8f\n"
    b"\n"
)
EXPECTED = [
    SSEEvent("message_start", '{"a": 1}'),
    SSEEvent(None, "line one\nline two\n two spaces", "7"),
    # `event: ping` had no data: not dispatched, and its name does not leak forward.
    SSEEvent(None, "Zürich ☀️", "7"),
]


def feed_in(parser: SSEParser, data: bytes, size: int) -> list[SSEEvent]:
    events = []
    for i in range(0, len(data), size):
        events += parser.feed(data[i : i + size])
    return events + parser.flush()


@pytest.mark.parametrize("eol", [b"\n", b"\r\n", b"\r"])
@pytest.mark.parametrize("size", [1, 2, 7, 10_000])
def test_events_identical_for_any_line_ending_and_chunking(eol: bytes, size: int) -> None:
    data = STREAM.replace(b"\n", eol)
    assert feed_in(SSEParser(), data, size) == EXPECTED


def test_cr_at_chunk_end_and_lf_at_next_start_is_one_line_break() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: a\r") == []
    # If "\r" + "\n" counted as two breaks, the event would dispatch here with only "a".
    assert parser.feed(b"\ndata: b\r") == []
    assert parser.feed(b"\n\r\n") == [SSEEvent(None, "a\nb")]


def test_mixed_line_endings() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: a\rdata: b\r\ndata: c\n\r\n") == [SSEEvent(None, "a\nb\nc")]


def test_field_without_colon_and_unknown_fields() -> None:
    parser = SSEParser()
    data = b"data\nretry: 100\nfoo: bar\nevent\ndata: x\n\n"
    # `data` without a colon is a data line with an empty value; `event` clears the type.
    assert parser.feed(data) == [SSEEvent(None, "\nx")]


def test_empty_data_line_is_dispatched() -> None:
    assert SSEParser().feed(b"data:\n\n") == [SSEEvent(None, "")]


def test_id_with_nul_is_ignored_and_id_persists() -> None:
    parser = SSEParser()
    events = parser.feed(b"id: 1\ndata: a\n\nid: 2\x00\ndata: b\n\ndata: c\n\n")
    assert [e.id for e in events] == ["1", "1", "1"]


def test_invalid_utf8_is_replaced() -> None:
    assert SSEParser().feed(b"data: \xff\xfe ok\n\n") == [SSEEvent(None, "\ufffd\ufffd ok")]


def test_leading_bom_is_ignored_even_when_split() -> None:
    parser = SSEParser()
    assert parser.feed(b"\xef\xbb") == []
    assert parser.feed(b"\xbfevent: x\ndata: y\n\n") == [SSEEvent("x", "y")]


def test_flush_dispatches_event_without_trailing_blank_line() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: a\n\ndata: b\ndata: c") == [SSEEvent(None, "a")]
    assert parser.flush() == [SSEEvent(None, "b\nc")]
    assert parser.flush() == []


def test_flush_with_nothing_pending() -> None:
    parser = SSEParser()
    parser.feed(b"data: a\n\n: trailing comment\n")
    assert parser.flush() == []


def test_over_long_line_is_dropped_and_parser_recovers() -> None:
    parser = SSEParser(max_line=16)
    assert parser.feed(b"data: " + b"x" * 8) == []
    assert parser.feed(b"y" * 8) == []  # 22 bytes buffered > 16: dropped
    assert parser.overflowed
    assert parser.feed(b"z" * 100) == []  # still the same line: discarded, not buffered
    assert len(parser._partial) == 0
    # The dropped line was the event's only data line, so nothing is dispatched for it.
    assert parser.feed(b"\n\ndata: ok\n\n") == [SSEEvent(None, "ok")]


def test_complete_long_lines_within_one_chunk_are_kept() -> None:
    # The cap bounds what is buffered between chunks, not a line that arrives whole.
    parser = SSEParser(max_line=16)
    assert parser.feed(b"data: " + b"x" * 100 + b"\n\n") == [SSEEvent(None, "x" * 100)]
    assert not parser.overflowed


class LineByLine(SSEParser):
    """The general path only: the reference for feed_raw's whole-frame fast path."""

    def feed_raw(self, data: bytes) -> list:
        return self._feed_lines(data)


FAST_STREAM = (
    b'data: {"a": 1}\n\n'
    b"event: delta\ndata: x\n\n"
    b"event: delta\ndata: y\ndata: z\n\n"  # two data lines
    b"event:tight\ndata:tight\n\n"  # no spaces after the colons
    b"event: \ndata: unnamed\n\n"  # an empty name is no name
    b"data: data: nested\n\n"
    b": comment\n\n"
    b"id: 9\nevent: with id\ndata: i\n\n"
    b"event: orphan\n\n"  # no data: nothing dispatched
    b"\n\n\n"  # blank lines only
    b"data:  \xc3\xbc\n\n"
    b"event: ping\ndata: {}\n\n"
    b"data: last"  # no end yet
)


@pytest.mark.parametrize("size", [1, 2, 5, 9, 16, 40, 1 << 20])
def test_fast_path_matches_line_by_line(size: int) -> None:
    # The first chunk always takes the general path (BOM); start fast from the second.
    stream = b"\n" + FAST_STREAM
    chunks = [stream[:1]] + [stream[i : i + size] for i in range(1, len(stream), size)]
    fast, slow = SSEParser(), LineByLine()
    got = [e for c in chunks for e in fast.feed_raw(c)] + fast.flush_raw()
    want = [e for c in chunks for e in slow.feed_raw(c)] + slow.flush_raw()
    assert got == want
    assert len(want) == 10 and want[-1] == (None, b"last", "9")


def test_fast_path_at_event_boundaries() -> None:
    parser = SSEParser()
    parser.feed_raw(b": hi\n\n")
    frames = FAST_STREAM.split(b"\n\n")
    got = [e for f in frames[:-1] for e in parser.feed_raw(f + b"\n\n")]
    reference = LineByLine()
    reference.feed_raw(b": hi\n\n")
    assert got == reference.feed_raw(FAST_STREAM)


def test_feed_raw_keeps_data_as_bytes() -> None:
    parser = SSEParser()
    assert parser.feed_raw(b"event: e\ndata: \xc3\xbc\xff\n\n") == [("e", b"\xc3\xbc\xff", None)]
    assert parser.feed(b"event: e\ndata: \xc3\xbc\xff\n\n") == [SSEEvent("e", "\xfc\ufffd")]


def test_fast_path_over_long_partial_line_is_dropped() -> None:
    parser = SSEParser(max_line=16)
    assert parser.feed_raw(b"data: a\n\n") == [(None, b"a", None)]
    assert parser.feed_raw(b"data: " + b"x" * 20) == []
    assert parser.overflowed and not parser._partial
    assert parser.feed_raw(b"yyy\n\ndata: ok\n\n") == [(None, b"ok", None)]


# --- BodyDecoder ---------------------------------------------------------------------

BODY = STREAM * 50


def raw_deflate(data: bytes) -> bytes:
    c = zlib.compressobj(wbits=-15)
    return c.compress(data) + c.flush()


def multi_frame_zstd(data: bytes) -> bytes:
    half = len(data) // 2
    c = zstandard.ZstdCompressor()
    return c.compress(data[:half]) + c.compress(data[half:])


ENCODERS = {
    "gzip": gzip.compress,
    "x-gzip": gzip.compress,
    "deflate": zlib.compress,
    "br": brotli.compress,
    "zstd": zstandard.ZstdCompressor().compress,
}


def decode_in(decoder: BodyDecoder, data: bytes, size: int) -> bytes:
    out = b"".join(decoder.decode(data[i : i + size]) for i in range(0, len(data), size))
    return out + decoder.flush()


@pytest.mark.parametrize("encoding", sorted(ENCODERS))
@pytest.mark.parametrize("size", [1, 7, 1 << 20])
def test_decoder_incremental(encoding: str, size: int) -> None:
    encoded = ENCODERS[encoding](BODY)
    assert decode_in(BodyDecoder(encoding), encoded, size) == BODY


@pytest.mark.parametrize("size", [1, 7, 1 << 20])
def test_raw_deflate_falls_back(size: int) -> None:
    assert decode_in(BodyDecoder("deflate"), raw_deflate(BODY), size) == BODY


@pytest.mark.parametrize("size", [1, 7, 1 << 20])
def test_zstd_multiple_frames(size: int) -> None:
    assert decode_in(BodyDecoder("zstd"), multi_frame_zstd(BODY), size) == BODY


@pytest.mark.parametrize("encoding", [None, "", "identity", "IDENTITY"])
def test_identity_passes_same_object(encoding: str | None) -> None:
    chunk = b"data: x\n\n"
    decoder = BodyDecoder(encoding)
    assert decoder.identity and decoder.decode(chunk) is chunk
    assert not BodyDecoder(f"{encoding or ''}, gzip").identity


def test_encoding_list_is_undone_in_reverse_order() -> None:
    encoded = brotli.compress(gzip.compress(BODY))  # "gzip, br": gzip applied first
    assert decode_in(BodyDecoder("gzip, br"), encoded, 7) == BODY
    assert decode_body(encoded, " GZIP ,identity, Br ") == BODY


def test_unknown_encoding_raises() -> None:
    with pytest.raises(ValueError, match="compress"):
        BodyDecoder("gzip, compress")


def test_decode_body_whole() -> None:
    assert decode_body(zlib.compress(BODY), "deflate") == BODY
    assert decode_body(raw_deflate(BODY), "deflate") == BODY
    assert decode_body(BODY, None) == BODY


def test_corrupt_input_raises_from_decode() -> None:
    # The tap relies on this to notice it cannot read the body and stop parsing.
    with pytest.raises(zlib.error):
        BodyDecoder("gzip").decode(b"\x1f\x8b\x08\x00" + b"\xff" * 64)
