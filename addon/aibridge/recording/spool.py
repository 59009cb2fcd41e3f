"""The spool: records waiting on disk for the database, as an append-only JSON-lines file.

One process owns a spool file at a time (an exclusive flock, released by the kernel if the
process dies). A second process on the same configuration gets its own `<name>.<pid>.jsonl`;
spools left by dead processes are found and replayed by the next one to start. Files hold
prompts, so they are created 0600. Lines are whole entries; a line torn by a crash or a full
disk is set aside in `<name>.rejected.jsonl`, never silently dropped.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from aibridge.recording.codec import Entry, decode, encode

_READ_BLOCK = 1 << 20


class SpoolBusy(Exception):
    """Another process holds this spool file."""


@dataclass
class Chunk:
    """Entries read from a spool, and where the spool continues once they are written."""
    entries: list[Entry]
    bad_lines: list[bytes]
    end: int
    count: int  # lines consumed, good and bad
    spool: Spool = field(repr=False)


class Spool:
    def __init__(self, path: Path, rejected_path: Path | None = None) -> None:
        """Open and lock `path` (created if missing). Raises SpoolBusy or OSError."""
        self.path = path
        self.rejected_path = rejected_path or _sibling(path, "rejected")
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise SpoolBusy(str(path)) from None
            # The previous owner may have removed the file between our open and our lock:
            # a lock on an unlinked file protects nothing, so start again.
            try:
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        self._fd: int | None = fd
        self._lock = threading.Lock()  # appends come from the writer and from submit()
        self._size = os.fstat(fd).st_size
        self._read_offset = 0
        self._dirty = False
        self.pending = self._count_lines()

    @classmethod
    def open_own(cls, path: Path) -> Spool:
        """This process's spool: `path`, or `<stem>.<pid><suffix>` if another process has it."""
        try:
            return cls(path)
        except SpoolBusy:
            return cls(_sibling(path, str(os.getpid())), _sibling(path, "rejected"))

    @classmethod
    def orphans(cls, path: Path, own: Spool) -> list[Spool]:
        """Spools of processes that are gone (unlocked `<stem>.<pid><suffix>` files)."""
        found = []
        for candidate in sorted(path.parent.glob(f"{path.stem}.*{path.suffix}")):
            middle = candidate.name[len(path.stem) + 1:-len(path.suffix) or None]
            if not middle.isdigit() or candidate == own.path:
                continue
            try:
                found.append(cls(candidate, _sibling(path, "rejected")))
            except (SpoolBusy, OSError):
                continue  # a live process owns it, or it vanished
        return found

    def append(self, entries: Sequence[Entry], *, sync: bool) -> None:
        """Add entries at the end. With sync, they are on disk when this returns; without,
        they are in the OS (safe from a process crash) until the next sync(). Raises OSError,
        leaving the file as it was."""
        data = b"".join(encode(e) for e in entries)
        with self._lock:
            fd = self._require_open()
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
            except OSError:
                os.ftruncate(fd, self._size)  # no half line that the next append would extend
                raise
            self._size += len(data)
            self.pending += len(entries)
            self._dirty = True
        if sync:
            self.sync()

    def sync(self) -> None:
        if self._dirty and self._fd is not None:
            self._dirty = False
            os.fsync(self._fd)

    def read(self, max_entries: int) -> Chunk:
        """Up to max_entries lines from where the last consumed chunk ended."""
        with self._lock:
            end = self._size
            fd = self._require_open()
        start = offset = self._read_offset
        lines: list[bytes] = []
        rest = b""
        while len(lines) < max_entries and offset < end:
            block = os.pread(fd, min(_READ_BLOCK, end - offset), offset)
            if not block:
                break
            offset += len(block)
            *complete, rest = (rest + block).split(b"\n")
            lines.extend(complete)
        lines = lines[:max_entries]
        entries: list[Entry] = []
        bad: list[bytes] = []
        for line in lines:
            if not line.strip():
                continue
            try:
                entries.append(decode(line))
            except ValueError:
                bad.append(line)
        return Chunk(entries, bad, start + sum(len(line) + 1 for line in lines), len(lines), self)

    def consumed(self, chunk: Chunk) -> None:
        """The chunk is in the database: move past it; empty the file once all is written."""
        with self._lock:
            self._read_offset = chunk.end
            self.pending = max(0, self.pending - chunk.count)
            if self._read_offset >= self._size and self._fd is not None:
                os.ftruncate(self._fd, 0)
                self._size = self._read_offset = 0
                self.pending = 0

    def reject(self, lines: Sequence[tuple[str, bytes]]) -> None:
        """Set aside lines the database refused for good, with the reason, for a human."""
        if not lines:
            return
        fd = os.open(self.rejected_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC,
                     0o600)
        try:
            for reason, line in lines:
                record = {"at": time.time(), "reason": reason,
                          "line": line.decode("utf-8", "replace")}
                os.write(fd, (json.dumps(record) + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)

    def close(self, *, remove_if_empty: bool = False) -> None:
        with self._lock:
            if self._fd is None:
                return
            if remove_if_empty and self._size == 0:
                self.path.unlink(missing_ok=True)  # still locked: nobody can adopt it now
            else:
                self.sync()
            os.close(self._fd)  # releases the flock
            self._fd = None

    def _require_open(self) -> int:
        if self._fd is None:
            raise OSError(f"spool {self.path} is closed")
        return self._fd

    def _count_lines(self) -> int:
        fd = self._require_open()
        count, offset, last = 0, 0, b"\n"
        while offset < self._size:
            block = os.pread(fd, _READ_BLOCK, offset)
            if not block:
                break
            count += block.count(b"\n")
            offset += len(block)
            last = block[-1:]
        if last != b"\n":
            # A crash cut the last line short: end it, so it is one (bad) line of its own.
            os.write(fd, b"\n")
            self._size += 1
            count += 1
        return count


def _sibling(path: Path, tag: str) -> Path:
    """`dir/name.spool.jsonl` -> `dir/name.spool.<tag>.jsonl`."""
    return path.with_name(f"{path.stem}.{tag}{path.suffix}")
