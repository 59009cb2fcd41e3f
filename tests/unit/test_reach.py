"""The bridge's own connect retries (upstream.reach), on a fake clock and fake connects."""

from __future__ import annotations

import asyncio

import pytest

from aibridge.upstream.reach import Reachability

ADDRESS = ("api.example", 443)


class World:
    """A fake connect whose upstream comes back after `down_for` seconds of the fake clock."""

    def __init__(self, down_for: float) -> None:
        self.now = 0.0
        self.down_for = down_for
        self.attempts: list[float] = []

    def clock(self) -> float:
        return self.now

    async def connect(self, address: tuple[str, int], timeout: float) -> None:
        assert address == ADDRESS and timeout > 0
        self.attempts.append(self.now)
        if self.now < self.down_for:
            raise ConnectionRefusedError(111, "Connection refused")


@pytest.fixture
def fake_sleep(monkeypatch: pytest.MonkeyPatch):
    def install(world: World) -> None:
        real_sleep = asyncio.sleep

        async def sleep(seconds: float) -> None:
            world.now += seconds
            await real_sleep(0)

        monkeypatch.setattr("aibridge.upstream.reach.asyncio.sleep", sleep)
    return install


async def test_nothing_is_probed_until_a_connection_failed() -> None:
    world = World(down_for=0)
    reach = Reachability(connect=world.connect, clock=world.clock)
    assert await reach.wait_until_reachable(ADDRESS) is True
    assert world.attempts == []


async def test_after_a_failure_the_bridge_retries_with_back_off_until_it_connects(fake_sleep):
    world = World(down_for=1.5)
    fake_sleep(world)
    reach = Reachability(window=10, connect=world.connect, clock=world.clock)
    reach.failed(ADDRESS)
    assert await reach.wait_until_reachable(ADDRESS) is True
    assert world.attempts == [0, 0.25, 0.75, 1.75]  # 0.25, 0.5, 1 s apart
    assert not reach.gave_up(ADDRESS)
    assert await reach.wait_until_reachable(ADDRESS) is True  # known good: no probe
    assert len(world.attempts) == 4


async def test_a_whole_window_without_a_connection_gives_up_then_fails_fast(fake_sleep):
    world = World(down_for=1000)
    fake_sleep(world)
    reach = Reachability(window=10, connect=world.connect, clock=world.clock)
    reach.failed(ADDRESS)
    assert await reach.wait_until_reachable(ADDRESS) is False
    assert reach.gave_up(ADDRESS)
    assert world.now == pytest.approx(10)  # bounded by the window
    tried = len(world.attempts)
    assert await reach.wait_until_reachable(ADDRESS) is False  # one quick attempt
    assert len(world.attempts) == tried + 1
    world.down_for = 0  # back: the next attempt connects and clears the state
    assert await reach.wait_until_reachable(ADDRESS) is True
    assert not reach.gave_up(ADDRESS)


async def test_concurrent_callers_share_one_probe(fake_sleep):
    world = World(down_for=0.3)
    fake_sleep(world)
    reach = Reachability(window=10, connect=world.connect, clock=world.clock)
    reach.failed(ADDRESS)
    results = await asyncio.gather(*(reach.wait_until_reachable(ADDRESS) for _ in range(20)))
    assert results == [True] * 20
    assert world.attempts == [0, 0.25, 0.75]


async def test_mitmproxy_connecting_clears_a_failure() -> None:
    world = World(down_for=1000)
    reach = Reachability(connect=world.connect, clock=world.clock)
    reach.failed(ADDRESS)
    reach.connected(ADDRESS)
    assert await reach.wait_until_reachable(ADDRESS) is True
    assert world.attempts == []
