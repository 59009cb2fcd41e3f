"""Budgets and rate limits shared by two bridge workers (`aibridge serve` behind real HAProxy,
`[state]` in a real redis-server, the fake provider): a request costs one round trip to
Redis to be admitted by all its budgets and limits and one to settle them (counted at the
server), spend through one worker refuses through the other, a limit counts the requests of
both, and a refused request holds nothing.

Prices: `fake-*` models cost $1000 per million output tokens and nothing for input, so each
fake answer (7 output tokens) costs exactly $0.007, and `max_tokens = 7` reserves that."""

from __future__ import annotations

import time

import openai
import pytest
import redis

from tests.conftest import RedisServer
from tests.e2e.test_scale_out import (  # noqa: F401 (gateway: the scale-out tests' fixture)
    MESSAGES,
    Gateway,
    Steady,
    eventually,
    gateway,
    shared_config,
)
from tests.fakeprovider import FakeProvider
from tests.redis_count import RoundTrips

QUOTAS = """
[prices."fake-*"]
input = 0
output = 1000
cache_read = 0
cache_write = 0

[[budgets]]
name = "alice-daily"
match = { actor = "alice" }
period = "day"
limit_usd = 0.021

[[budgets]]
name = "ml-monthly"
match = { team = "ml" }
period = "month"
limit_usd = 10

[[limits]]
name = "alice"
match = { actor = "alice" }
rpm = 3
tpm = 100000
concurrent = 4

[[limits]]
name = "ml"
match = { team = "ml" }
rpm = 1000
tpm = 1000000
concurrent = 10
"""
COST = 7_000_000  # nano-USD: one fake answer


def ask(client: openai.OpenAI) -> str:
    answer = client.chat.completions.create(model="fake-model", messages=MESSAGES,
                                            max_tokens=7)
    return answer.choices[0].message.content or ""


def balances(client: redis.Redis) -> dict[str, tuple[int, int]]:
    """Budget name -> (spent, reserved) in Redis."""
    found = {}
    for key in client.scan_iter("aibridge:s:money:budget:*"):
        name = key.decode().split(":")[4]
        if not key.endswith(b":marks"):
            spent, reserved = client.hmget(key, "spent", "reserved")
            found[name] = (int(spent or 0), int(reserved or 0))
    return found


def settled(client: redis.Redis, spent: int, timeout: float = 15.0) -> bool:
    """Until both budgets show `spent` and nothing reserved (a request is settled when its
    interception ends, just after the client has the answer)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if balances(client) == {"alice-daily": (spent, 0), "ml-monthly": (spent, 0)}:
            return True
        time.sleep(0.02)
    return False


def test_a_request_is_one_round_trip_to_admit_and_one_to_settle_across_workers(
        fake: FakeProvider, redis_server: RedisServer, gateway):  # noqa: F811
    g = gateway(shared_config(fake, redis_server, QUOTAS))
    (a, _), (b, _) = g.worker(1), g.worker(2)
    through_a, through_b = g.client(a), g.client(b)
    assert ask(through_a) == "Hello from fake"  # connections open, logins done
    assert ask(through_b) == "Hello from fake"
    with RoundTrips(redis_server.url) as trips:
        assert ask(through_a) == "Hello from fake"
        assert settled(trips.client, 3 * COST), balances(trips.client)
    # Worker A: 2 budgets and 2 limits (slot, request window, token window) admitted in one
    # script, settled in another; worker B sent nothing.
    assert trips.commands == ["EVALSHA", "EVALSHA"], trips.commands
    with pytest.raises(openai.PermissionDeniedError) as refused:
        ask(through_b)  # alice's $0.021 were spent through both workers
    error = refused.value.response.json()["error"]
    assert error["code"] == "budget_exceeded"
    assert error["message"].startswith('budget "alice-daily" is spent: $0.021 of $0.021 today')
    assert len(fake.requests) == 3


def test_a_limit_counts_both_workers_and_a_refused_request_holds_nothing(
        fake: FakeProvider, redis_server: RedisServer, gateway):  # noqa: F811
    g = gateway(shared_config(fake, redis_server,
                              QUOTAS.replace("limit_usd = 0.021", "limit_usd = 1")))
    (a, _), (b, _) = g.worker(1), g.worker(2)
    through_a, through_b = g.client(a), g.client(b)
    for client in (through_a, through_b, through_a):
        assert ask(client) == "Hello from fake"
    with pytest.raises(openai.RateLimitError) as refused:
        ask(through_b)  # alice's fourth request this minute, the second through B
    response = refused.value.response
    assert 55 <= int(response.headers["retry-after"]) <= 60
    assert response.json()["error"]["message"].startswith(
        'rate limit "alice" (actor=alice) exceeded: 3 request(s) per minute; retry in ')
    state = redis.Redis.from_url(redis_server.url)
    # The refused request reserved nothing and took no slot or window entry in "ml" (the
    # limit after the budgets, before "alice" refused).
    assert settled(state, 3 * COST), balances(state)
    slots = [int(n) for key in state.scan_iter("aibridge:s:slots:*") for n in state.hvals(key)]
    assert sum(slots) == 0
    [ml_requests] = [k for k in state.scan_iter("aibridge:s:win:rpm:ml:*") if
                     not k.endswith(b":sum")]
    assert state.zcard(ml_requests) == 3
    assert len(fake.requests) == 3


def test_redis_killed_mid_run_fails_no_request_and_leaks_nothing(
        fake: FakeProvider, redis_server: RedisServer, gateway):  # noqa: F811
    roomy = QUOTAS.replace("limit_usd = 0.021", "limit_usd = 100").replace(
        "rpm = 3\n", "rpm = 100000\n")
    g = gateway(shared_config(fake, redis_server, roomy))
    ports = [g.worker(1)[0], g.worker(2)[0]]
    with Steady(g, ask) as load:
        assert load.more(20)
        redis_server.kill()
        for port in ports:
            assert eventually(lambda port=port: Gateway.health(port)["status"] == "degraded")
        assert load.more(30)
        redis_server.start()  # back, empty: each worker re-syncs what it settled meanwhile
        for port in ports:
            assert eventually(lambda port=port: Gateway.health(port)["status"] == "ok")
        assert load.more(20)
    assert load.failures == []
    state = redis.Redis.from_url(redis_server.url)

    def at_rest() -> bool:  # every request ended: nothing reserved, no slot taken
        money = balances(state)
        slots = [int(n) for key in state.scan_iter("aibridge:s:slots:*")
                 for n in state.hvals(key)]
        return len(money) == 2 and all(r == 0 for _, r in money.values()) and sum(slots) == 0
    assert eventually(at_rest), balances(state)
    # What was settled during the outage or since reached Redis: at least the requests
    # after it came back, never more than were made.
    spent = balances(state)["ml-monthly"][0]
    assert 20 * COST <= spent <= load.done * COST
    for n in (1, 2):
        assert g.worker_log(n).count("unreachable") == 1, g.worker_log(n)
