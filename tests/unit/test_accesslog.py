"""The access log's line format: `[HH:MM:SS.mmm] message`, the time cached per second."""

import logging

import pytest

from aibridge.observe import accesslog
from aibridge.observe.accesslog import _Formatter


@pytest.fixture(autouse=True)
def unconfigured_afterwards():
    yield
    accesslog.configure("off")
    logger = accesslog.access
    logger.disabled, logger.propagate = False, True
    logger.setLevel(logging.NOTSET)


def test_lines_match_the_plain_formatter_across_seconds():
    fmt, datefmt = "[%(asctime)s.%(msecs)03d] %(message)s", "%H:%M:%S"
    cached, plain = _Formatter(fmt, datefmt), logging.Formatter(fmt, datefmt)
    for created in (1000.0, 1000.2, 1000.999, 1001.0, 1001.5, 999.5, 1_800_000_000.123):
        record = logging.LogRecord("aibridge.access", logging.INFO, __file__, 1, "line %s",
                                   ("x",), None)
        record.created = created
        record.msecs = (created - int(created)) * 1000
        assert cached.format(record) == plain.format(record)


def _lines(path):
    return path.read_text(encoding="utf-8").splitlines()


def test_file_lines_are_what_the_handler_formats(tmp_path, monkeypatch):
    import re
    import time

    log = tmp_path / "access.log"
    try:
        accesslog.configure(str(log))
        handler = accesslog.access.handlers[0]
        monkeypatch.setattr(time, "time_ns", lambda: 1_800_000_000_123_456_789)
        accesslog.access.info("aibridge: one é")  # the direct path
        accesslog.access.info("aibridge: %s", "two")  # the logging path
        record = logging.LogRecord("aibridge.access", logging.INFO, __file__, 1,
                                   "aibridge: one é", (), None)
        assert _lines(log)[0] == handler.format(record)
        assert re.fullmatch(r"\[\d\d:\d\d:\d\d\.123\] aibridge: one é", _lines(log)[0])
        assert re.fullmatch(r"\[\d\d:\d\d:\d\d\.\d\d\d\] aibridge: two", _lines(log)[1])
        accesslog.configure("off")
        accesslog.access.info("aibridge: three")
        assert len(_lines(log)) == 2
    finally:
        accesslog.configure("off")  # closes the file


def test_stderr_and_event_log_destinations(capsys, caplog):
    try:
        accesslog.configure("stderr")
        accesslog.access.info("aibridge: to stderr")
        assert capsys.readouterr().err.endswith("] aibridge: to stderr\n")
        accesslog.configure("event-log")
        with caplog.at_level(logging.INFO, logger="aibridge.access"):
            accesslog.access.info("aibridge: to the event log")
        assert [r.getMessage() for r in caplog.records] == ["aibridge: to the event log"]
        assert capsys.readouterr().err == ""
    finally:
        accesslog.configure("off")
