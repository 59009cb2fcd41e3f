"""Proxy-auth failures are rate-limited per address; tokens compare in constant time."""

from aibridge.access.actors import ActorDirectory, token_digest
from aibridge.access.failure_limit import AuthFailureLimiter
from aibridge.intercept import Actor


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_an_address_is_blocked_after_the_limit_until_the_window_passes():
    clock = Clock()
    limiter = AuthFailureLimiter(limit=3, window=60, clock=clock)
    assert [limiter.failed("10.0.0.1") for _ in range(3)] == [False, False, True]
    assert limiter.blocked("10.0.0.1")
    assert not limiter.blocked("10.0.0.2")  # others are unaffected
    clock.now = 61
    assert not limiter.blocked("10.0.0.1")


def test_success_clears_and_memory_is_bounded():
    limiter = AuthFailureLimiter(limit=2, window=60, max_addresses=3, clock=Clock())
    limiter.failed("a")
    limiter.succeeded("a")
    limiter.failed("a")
    assert not limiter.blocked("a")
    for address in "bcdef":
        limiter.failed(address)
    assert len(limiter._failures) == 3


def test_directory_authenticates_by_digest():
    alice = Actor(id="alice")
    directory = ActorDirectory({token_digest("secret"): alice}, None)
    assert directory.authenticate("secret") is alice
    assert directory.authenticate("secreT") is None
    assert directory.authenticate("") is None
