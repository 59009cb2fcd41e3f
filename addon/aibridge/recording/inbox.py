"""The recorder's bounded queue between the proxy's threads and its writer thread.

`queue.Queue` does the same with two condition variables, and every `put` notifies one whether
or not anyone waits: over a microsecond per record on the proxy's event loop, four records per
request. The writer never blocks on this queue (it sleeps between drains, see the recorder),
so a deque behind one plain lock is all it takes.
"""

from __future__ import annotations

import threading
from collections import deque


class Inbox[T]:
    def __init__(self, size: int) -> None:
        self.size = max(1, size)
        self._items: deque[T] = deque()
        self._lock = threading.Lock()
        self._unfinished = 0  # put and not yet marked done (taken ones included)

    def put(self, item: T) -> bool:
        """Queue `item`; False (and nothing queued) when the inbox is full."""
        with self._lock:
            if len(self._items) >= self.size:
                return False
            self._items.append(item)
            self._unfinished += 1
            return True

    def take(self, most: int) -> list[T]:
        """Up to `most` items, oldest first; they stay unfinished until `done`."""
        taken: list[T] = []
        with self._lock:
            items = self._items
            while items and len(taken) < most:
                taken.append(items.popleft())
        return taken

    def done(self, count: int) -> None:
        """`count` taken items are dealt with (written, spooled or dropped)."""
        with self._lock:
            self._unfinished -= count

    @property
    def unfinished(self) -> int:
        return self._unfinished

    def __len__(self) -> int:
        return len(self._items)
