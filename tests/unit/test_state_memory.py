"""The in-process state store: money with reservations, sliding windows, slots, the ledger."""

from __future__ import annotations

import threading
from decimal import Decimal

import pytest

from aibridge.state.ledger import Ledger, Notice, Usage
from aibridge.state.memory import MemoryState
from aibridge.state.store import Balance, from_nanos, to_nanos

FAR = 4_000_000_000.0  # an expiry far away


def test_nanos_round_up_and_back():
    assert to_nanos(Decimal("0.000000001")) == 1
    assert to_nanos(Decimal("0.0000000011")) == 2  # never counts less than was spent
    assert to_nanos(Decimal("500")) == 500_000_000_000
    assert from_nanos(1_500_000_000) == Decimal("1.5")


def test_reserve_admits_while_spent_plus_reserved_is_below_the_limit():
    s = MemoryState()
    assert s.balance("b") is None
    assert s.reserve("b", 40, 100, expires_at=FAR) == (True, Balance(0, 0))
    assert s.reserve("b", 40, 100, expires_at=FAR) == (True, Balance(0, 40))
    assert s.reserve("b", 40, 100, expires_at=FAR) == (True, Balance(0, 80))  # 80 < 100
    assert s.reserve("b", 40, 100, expires_at=FAR) == (False, Balance(0, 120))
    assert s.settle("b", 40, 10, expires_at=FAR) == Balance(10, 80)
    s.unreserve("b", 40)
    assert s.balance("b") == Balance(10, 40)


def test_prime_sets_only_a_key_not_yet_held():
    s = MemoryState()
    assert s.prime("b", 70, expires_at=FAR) == Balance(70, 0)
    assert s.prime("b", 5, expires_at=FAR) == Balance(70, 0)  # a second process, a reload
    s.settle("b", 0, 30, expires_at=FAR)
    ok, before = s.reserve("b", 1, 100, expires_at=FAR)
    assert not ok and before == Balance(100, 0)


def test_mark_once():
    s = MemoryState()
    assert s.mark_once("b", "warn:0.8")
    assert not s.mark_once("b", "warn:0.8")
    assert s.mark_once("b", "warn:0.95")


def test_hit_counts_requests_in_a_sliding_window_and_says_when_it_admits():
    s = MemoryState()
    for t in (0.0, 10.0, 20.0):
        wait, entry = s.hit("rpm", t, 60.0, 3)
        assert wait == 0.0 and entry is not None
    wait, entry = s.hit("rpm", 30.0, 60.0, 3)
    assert entry is None and wait == pytest.approx(30.0)  # the entry at 0 leaves at 60
    wait, entry = s.hit("rpm", 60.0, 60.0, 3)  # it left: one more fits
    assert entry is not None and wait == 0.0
    wait, _ = s.hit("rpm", 61.0, 60.0, 3)
    assert wait == pytest.approx(9.0)  # next to leave: the one at 10
    assert s.total("rpm", 61.0, 60.0) == 3


def test_unhit_takes_back_one_entry():
    s = MemoryState()
    _, first = s.hit("rpm", 0.0, 60.0, 2)
    _, second = s.hit("rpm", 1.0, 60.0, 2)
    s.unhit("rpm", first)
    assert s.total("rpm", 2.0, 60.0) == 1
    assert s.hit("rpm", 2.0, 60.0, 2)[1] is not None
    s.unhit("rpm", object())  # unknown: nothing happens
    assert s.total("rpm", 2.0, 60.0) == 2
    assert second is not None


def test_token_window_waits_until_the_weight_is_below_the_limit():
    s = MemoryState()
    assert s.wait("tpm", 0.0, 60.0, 100) == 0.0
    s.charge("tpm", 0.0, 60, 60.0)
    s.charge("tpm", 5.0, 30, 60.0)
    assert s.wait("tpm", 6.0, 60.0, 100) == 0.0  # 90 < 100
    s.charge("tpm", 10.0, 50, 60.0)  # 140
    assert s.wait("tpm", 11.0, 60.0, 100) == pytest.approx(49.0)  # 60 leaves at 60 → 80
    assert s.wait("tpm", 60.0, 60.0, 100) == 0.0
    s.charge("tpm", 61.0, 500, 60.0)  # one entry over the limit on its own
    assert s.wait("tpm", 61.0, 60.0, 100) == pytest.approx(60.0)
    s.charge("tpm", 61.0, 0, 60.0)  # nothing to charge
    assert s.total("tpm", 61.0, 60.0) == 580  # 30@5, 50@10 and 500@61


def test_slots():
    s = MemoryState()
    assert s.acquire("c", 2) and s.acquire("c", 2)
    assert not s.acquire("c", 2)
    s.release("c")
    assert s.in_use("c") == 1
    assert s.acquire("c", 2)
    s.release("c")
    s.release("c")
    s.release("c")  # more releases than takes never go negative
    assert s.in_use("c") == 0


def test_concurrent_reservations_never_pass_the_limit():
    """Many threads reserving at once: exactly as many are admitted as fit."""
    s = MemoryState()
    admitted = []
    barrier = threading.Barrier(16)

    def worker() -> None:
        barrier.wait()
        for _ in range(50):
            ok, _ = s.reserve("b", 1, 100, expires_at=FAR)
            if ok:
                admitted.append(1)

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(admitted) == 100
    assert s.balance("b") == Balance(0, 100)


def test_concurrent_hits_never_pass_the_limit():
    s = MemoryState()
    admitted = []
    barrier = threading.Barrier(8)

    def worker() -> None:
        barrier.wait()
        for _ in range(100):
            if s.hit("rpm", 1.0, 60.0, 37)[1] is not None:
                admitted.append(1)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(admitted) == 37


def test_sweep_drops_expired_money_and_empty_windows():
    s = MemoryState()
    s.prime("old", 5, expires_at=10.0)
    s.prime("new", 5, expires_at=FAR)
    s.charge("tpm", 0.0, 5, 60.0)
    s._sweep(1000.0)
    assert s.balance("old") is None and s.balance("new") == Balance(5, 0)
    assert s.sizes() == {"money": 1, "windows": 0, "slots": 0}


class _Hold:
    def __init__(self, notices=()) -> None:
        self.settled: list[Usage] = []
        self.released = 0
        self.notices = list(notices)

    def settle(self, usage: Usage):
        self.settled.append(usage)
        return self.notices

    def release(self) -> None:
        self.released += 1


class _Broken(_Hold):
    def settle(self, usage: Usage):
        raise RuntimeError("bug")


def test_ledger_settles_each_interception_once():
    ledger = Ledger()
    notice = Notice("aibridge.budget.warning", "crossed")
    a, b = _Hold([notice]), _Hold()
    ledger.keep("i1", [_Broken(), a, b])
    ledger.keep("i2", [])  # nothing held: nothing kept
    assert len(ledger) == 1
    usage = Usage(Decimal("0.01"), 18, 1.0)
    assert ledger.settle("i1", usage) == [notice]  # a broken hold does not stop the others
    assert a.settled == [usage] and b.settled == [usage]
    assert ledger.settle("i1", usage) == []
    assert len(ledger) == 0


def test_ledger_sweeps_holds_that_never_ended():
    ledger = Ledger()
    hold = _Hold()
    ledger.keep("stuck", [hold])
    assert ledger.sweep(3600) == 0
    assert ledger.sweep(-1) == 1
    assert hold.released == 1 and len(ledger) == 0
