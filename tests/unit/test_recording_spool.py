"""The spool file: order, durability bookkeeping, torn lines, ownership between processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from aibridge.recording.codec import Entry, encode, new_entry
from aibridge.recording.spool import Spool, SpoolBusy
from tests.conftest import interception


def some_entries(n: int) -> list[Entry]:
    out: list[Entry] = []
    while len(out) < n:
        out.extend(new_entry(r) for r in interception())
    return out[:n]


def test_append_read_consume_in_order(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.jsonl")
    first, second = some_entries(3), some_entries(4)
    spool.append(first, sync=True)
    spool.append(second, sync=False)
    assert spool.pending == 7
    chunk = spool.read(5)
    assert chunk.entries == (first + second)[:5] and not chunk.bad_lines
    spool.consumed(chunk)
    assert spool.pending == 2
    rest = spool.read(100)
    assert rest.entries == second[2:]
    spool.consumed(rest)
    # Everything written: the file is emptied rather than growing forever.
    assert spool.pending == 0 and (tmp_path / "s.jsonl").stat().st_size == 0
    spool.close()


def test_reopen_counts_what_is_waiting_and_private_mode(tmp_path: Path) -> None:
    path = tmp_path / "dir" / "s.jsonl"
    spool = Spool(path)
    spool.append(some_entries(6), sync=True)
    spool.close()
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o777 == 0o700
    again = Spool(path)
    assert again.pending == 6 and len(again.read(100).entries) == 6
    again.close()


def test_a_torn_last_line_becomes_one_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    good = some_entries(2)
    path.write_bytes(b"".join(encode(e) for e in good) + encode(good[0])[:30])
    spool = Spool(path)
    assert spool.pending == 3
    spool.append(some_entries(1), sync=True)  # lands on a line of its own
    chunk = spool.read(100)
    assert len(chunk.entries) == 3 and len(chunk.bad_lines) == 1
    spool.reject([("unreadable", line) for line in chunk.bad_lines])
    rejected = [json.loads(line) for line in spool.rejected_path.read_text().splitlines()]
    assert rejected[0]["reason"] == "unreadable"
    assert rejected[0]["line"] == encode(good[0])[:30].decode()
    spool.close()


def test_large_lines_are_read_whole(tmp_path: Path) -> None:
    import dataclasses
    big = new_entry(dataclasses.replace(interception()[2], prompt="x" * 3_000_000))
    spool = Spool(tmp_path / "s.jsonl")
    spool.append([big, *some_entries(2)], sync=True)
    chunk = spool.read(2)
    assert chunk.entries[0] == big and chunk.count == 2
    spool.close()


def test_one_owner_per_file_and_orphans_of_dead_processes(tmp_path: Path) -> None:
    path = tmp_path / "aibridge.db.spool.jsonl"
    mine = Spool.open_own(path)
    assert mine.path == path
    with pytest.raises(SpoolBusy):
        Spool(path)
    second = Spool.open_own(path)  # e.g. mitmweb next to mitmdump on the same config
    assert second.path == tmp_path / f"aibridge.db.spool.{os.getpid()}.jsonl"
    assert second.rejected_path == tmp_path / "aibridge.db.spool.rejected.jsonl"
    second.append(some_entries(2), sync=True)

    # A spool left by a process that is gone is adopted; a live owner's is not.
    dead = tmp_path / "aibridge.db.spool.999999.jsonl"
    dead.write_bytes(b"".join(encode(e) for e in some_entries(3)))
    (tmp_path / "aibridge.db.spool.rejected.jsonl").write_text("")
    orphans = Spool.orphans(path, mine)
    assert [o.path for o in orphans] == [dead] and orphans[0].pending == 3
    orphans[0].consumed(orphans[0].read(10))
    orphans[0].close(remove_if_empty=True)
    assert not dead.exists()
    for spool in (mine, second):
        spool.close()


def test_lock_is_released_when_the_owner_process_dies(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    code = ("import sys; from pathlib import Path; from aibridge.recording.spool import Spool;"
            "s = Spool(Path(sys.argv[1])); print('locked', flush=True); sys.stdin.read()")
    child = subprocess.Popen([sys.executable, "-c", code, str(path)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "locked"
        with pytest.raises(SpoolBusy):
            Spool(path)
    finally:
        child.kill()
        child.wait(10)
    Spool(path).close()


def test_a_failed_write_leaves_no_half_line(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    spool = Spool(tmp_path / "s.jsonl")
    spool.append(some_entries(1), sync=True)
    real_write = os.write
    calls = {"n": 0}

    def disk_full(fd: int, data: bytes) -> int:
        calls["n"] += 1
        if calls["n"] == 1:
            return real_write(fd, bytes(data[:10]))  # a short write, then the disk is full
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", disk_full)
    with pytest.raises(OSError):
        spool.append(some_entries(2), sync=True)
    monkeypatch.undo()
    assert spool.pending == 1
    spool.append(some_entries(1), sync=True)
    chunk = spool.read(10)
    assert len(chunk.entries) == 2 and not chunk.bad_lines
    spool.close()
