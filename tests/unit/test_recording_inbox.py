"""The recorder's inbox: bounded, first in first out, every item taken once, and counted as
unfinished until the writer says it is done, with several threads putting at once."""

from __future__ import annotations

import threading

from aibridge.recording.inbox import Inbox


def test_bounded_fifo_and_unfinished_until_done() -> None:
    inbox: Inbox[int] = Inbox(3)
    assert [inbox.put(n) for n in range(5)] == [True, True, True, False, False]
    assert len(inbox) == 3 and inbox.unfinished == 3
    assert inbox.take(2) == [0, 1]
    assert inbox.put(3) and len(inbox) == 2 and inbox.unfinished == 4
    assert inbox.take(10) == [2, 3] and not inbox and inbox.unfinished == 4
    inbox.done(4)
    assert inbox.unfinished == 0 and inbox.take(1) == []


def test_threads_putting_while_one_takes_lose_nothing() -> None:
    inbox: Inbox[tuple[int, int]] = Inbox(1_000_000)
    per_thread, threads = 20_000, 4
    taken: list[tuple[int, int]] = []
    done = threading.Event()

    def writer() -> None:
        while not done.is_set() or inbox:
            batch = inbox.take(500)
            taken.extend(batch)
            inbox.done(len(batch))

    def producer(t: int) -> None:
        for n in range(per_thread):
            assert inbox.put((t, n))

    reader = threading.Thread(target=writer)
    reader.start()
    producers = [threading.Thread(target=producer, args=(t,)) for t in range(threads)]
    for p in producers:
        p.start()
    for p in producers:
        p.join()
    done.set()
    reader.join(30)
    assert sorted(taken) == [(t, n) for t in range(threads) for n in range(per_thread)]
    for t in range(threads):  # each producer's items in the order it put them
        assert [n for s, n in taken if s == t] == list(range(per_thread))
    assert inbox.unfinished == 0
