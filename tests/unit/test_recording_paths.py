"""Recording URLs, default locations, the spool's line format, and secret-free errors."""

from __future__ import annotations

import dataclasses
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import exc as sa_exc

from aibridge.recording import codec, paths
from aibridge.recording.db_errors import (
    describe_error,
    is_misconfigured,
    is_poison,
    is_unreachable,
)
from aibridge.recording.records import TokenUsage
from tests.conftest import interception


@pytest.fixture(autouse=True)
def _no_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("AIBRIDGE_DATA_DIR", raising=False)
    monkeypatch.delenv("XDG_STATE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


def test_default_database_path_precedence(monkeypatch: pytest.MonkeyPatch,
                                          tmp_path: Path) -> None:
    assert paths.default_db_path() == tmp_path / "home/.local/state/aibridge/aibridge.db"
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    assert paths.default_db_path() == tmp_path / "state/aibridge/aibridge.db"
    monkeypatch.setenv("AIBRIDGE_DATA_DIR", str(tmp_path / "data"))
    assert paths.default_db_path() == tmp_path / "data/aibridge.db"


def test_resolve_url(tmp_path: Path) -> None:
    default = paths.resolve_url(None)
    assert default.get_backend_name() == "sqlite"
    assert default.database == str(tmp_path / "home/.local/state/aibridge/aibridge.db")
    relative = paths.resolve_url("sqlite:///records/aibridge.db", tmp_path / "conf")
    assert relative.database == str(tmp_path / "conf/records/aibridge.db")
    assert paths.resolve_url("sqlite:////var/x.db").database == "/var/x.db"
    pg = paths.resolve_url("postgresql://u:pw@db.example:5433/rec")
    assert pg.drivername == "postgresql+psycopg"
    assert (pg.host, pg.port, pg.database, pg.password) == ("db.example", 5433, "rec", "pw")
    assert paths.resolve_url("postgres://u@h/d").drivername == "postgresql+psycopg"


@pytest.mark.parametrize("url, words", [
    ("mysql://u:secretpw@h/d", "not supported"),
    ("sqlite://", "file path"),
    ("sqlite:///:memory:", "file path"),
    ("not a url :: secretpw", "not a database URL"),
])
def test_bad_urls_are_explained_without_passwords(url: str, words: str) -> None:
    with pytest.raises(paths.RecordingUrlError, match=words) as caught:
        paths.resolve_url(url)
    assert "secretpw" not in str(caught.value) or url.startswith("not a url")


def test_spool_paths(tmp_path: Path) -> None:
    sqlite_url = paths.resolve_url("sqlite:///x/aibridge.db", tmp_path)
    assert paths.default_spool_path(sqlite_url) == tmp_path / "x/aibridge.db.spool.jsonl"
    one = paths.default_spool_path(paths.resolve_url("postgresql://u:one@h/d"))
    two = paths.default_spool_path(paths.resolve_url("postgresql://u:two@h/d"))
    other = paths.default_spool_path(paths.resolve_url("postgresql://u:one@h/other"))
    assert one == two != other  # a new password keeps the spool; another database does not
    assert one.parent == tmp_path / "home/.local/state/aibridge"
    assert "one" not in one.name


def test_urls_are_shown_without_passwords() -> None:
    url = paths.resolve_url("postgresql://bridge:hunter2@db/rec")
    assert "hunter2" not in paths.display_url(url)
    assert paths.mask_url("failed: postgresql://bridge:hunter2@db:5432/rec (x)") == \
        "failed: postgresql://bridge:***@db:5432/rec (x)"


def test_describe_error_has_no_sql_parameters_or_secrets() -> None:
    orig = sqlite3.OperationalError(
        "connect to postgresql://u:hunter2@h failed; password=hunter2 key sk-live-0123456789abc")
    error = sa_exc.OperationalError("INSERT INTO prompt_usages VALUES (?)",
                                    ("my key is sk-ant-api03-secret",), orig)
    text = describe_error(error)
    assert text.startswith("OperationalError: connect to")
    for secret in ("hunter2", "sk-live-0123456789abc", "sk-ant-api03", "INSERT"):
        assert secret not in text
    assert len(describe_error(ValueError("x" * 5000))) <= 300


def test_error_classification() -> None:
    orig = sqlite3.OperationalError("x")
    assert is_unreachable(sa_exc.OperationalError("s", {}, orig))
    assert not is_poison(sa_exc.OperationalError("s", {}, orig))
    assert is_poison(sa_exc.IntegrityError("s", {}, sqlite3.IntegrityError("x")))
    assert is_poison(sa_exc.DataError("s", {}, sqlite3.DataError("x")))
    assert is_poison(ValueError("bad float"))
    assert not is_poison(sa_exc.ProgrammingError("s", {}, sqlite3.ProgrammingError("x")))


@pytest.mark.parametrize("message, misconfigured", [
    ('connection failed: FATAL:  database "rec" does not exist', True),
    ('connection failed: FATAL:  password authentication failed for user "u"', True),
    ('FATAL:  role "bridge" does not exist', True),
    ("connection failed: Connection refused", False),
    ("FATAL:  the database system is starting up", False),
    ("FATAL:  sorry, too many clients already", False),
])
def test_refusals_that_waiting_cannot_fix(message: str, misconfigured: bool) -> None:
    error = sa_exc.OperationalError("connect", {}, sqlite3.OperationalError(message))
    assert is_misconfigured(error) is misconfigured
    assert is_unreachable(error)


def test_spool_lines_round_trip_every_record_type() -> None:
    for record in interception():
        entry = codec.new_entry(record)
        line = codec.encode(entry)
        assert line.endswith(b"\n") and line.count(b"\n") == 1
        assert codec.decode(line) == entry


def test_entry_keys() -> None:
    started, token, *_, ended = interception("iid-1")
    assert codec.new_entry(started).key == codec.new_entry(ended).key == "iid-1"
    # Usage records get a fresh key each: two identical deltas are two records.
    assert codec.new_entry(token).key != codec.new_entry(token).key
    unset = dataclasses.replace(token, created_at=0.0)
    assert codec.new_entry(unset).record.created_at > 0  # type: ignore[union-attr]
    with pytest.raises(TypeError):
        codec.new_entry(object())  # type: ignore[arg-type]


def test_decode_rejects_torn_or_foreign_lines_and_tolerates_new_fields() -> None:
    for bad in (b'{"kind": "token", "key"', b'{"kind": "nope", "key": "k", "record": {}}',
                b'{"kind": "token", "key": "k", "record": {}}', b"[]"):
        with pytest.raises(ValueError):
            codec.decode(bad)
    line = codec.encode(codec.new_entry(interception()[1])).replace(
        b'"record":{', b'"record":{"added_later":1,')
    assert isinstance(codec.decode(line).record, TokenUsage)


def test_odd_text_survives_the_spool() -> None:
    prompt = interception()[2]
    odd = dataclasses.replace(prompt, prompt="nul\x00 surrogate \ud800 emoji \U0001f600")
    entry = codec.new_entry(odd)
    assert codec.decode(codec.encode(entry)).record == odd
