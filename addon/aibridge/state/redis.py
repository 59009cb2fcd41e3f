"""State shared by several bridge processes in Redis (>= 7, or Valkey): `[state] url`.

`RedisLink` is this process's connection: every call on the request path is bounded by
`[state] timeout` (50 ms by default) and made only while Redis is reachable. The first failed
call marks it unreachable and logs one line; from then on nothing on the request path waits
for Redis: each process decides on its local state (`MemoryState` here, the pools' and
breakers' own state in keys/). A background thread listens for the other processes' changes
(pub/sub), keeps this process's liveness key fresh, and, once Redis answers again, re-syncs
(pushes what changed here meanwhile, pulls what changed there) before the request path uses it
again, with one line in the log.

`RedisState` is the `StateStore` (store.py) of the admission policies over it: each method is
one Lua script, so check and change stay one atomic step across processes, in one round trip.
Keys are `<prefix>:...` and carry no secrets: budget and limit keys are names and hashes, API
keys are short hashes (keys/sharing.py), user names are hashed.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from aibridge.state.memory import MemoryState
from aibridge.state.store import Balance

logger = logging.getLogger("aibridge")
ALIVE_TTL = 15  # seconds a process's liveness key outlives its last heartbeat
HEARTBEAT_EVERY = 5.0  # seconds
FAILURES = (redis.RedisError, OSError)


def safe_url(url: str) -> str:
    """The URL for logs and health: no password."""
    parts = urlsplit(url)
    if parts.password is None and "@" not in parts.netloc:
        return url
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit((parts.scheme, f"***@{host}", parts.path, "", ""))


class RedisLink:
    """One process's connection to the shared store, its health, and its subscriptions."""

    def __init__(self, url: str, *, timeout: float = 0.05, retry_interval: float = 1.0,
                 prefix: str = "aibridge") -> None:
        self.url, self.timeout, self.retry_interval = url, timeout, retry_interval
        self.prefix = prefix
        self.channel = f"{prefix}:events"
        self.process = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.alive_key = f"{prefix}:alive:{self.process}"
        # No retries inside redis-py: a failed call falls back at once, the thread reconnects.
        self.client = redis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0), health_check_interval=0,
            client_name=f"aibridge-{os.getpid()}")
        self._listen = redis.Redis.from_url(
            url, socket_timeout=max(timeout, 2.0), socket_connect_timeout=max(timeout, 2.0),
            retry=Retry(NoBackoff(), 0), health_check_interval=0)
        self.reachable = False
        self.since = time.time()  # of the current state (reachable or not)
        self.outages = 0
        self._listeners: dict[str, list[Callable[[dict[str, Any]], None]]] = {}
        self._resyncs: list[Callable[[], None]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._said_down = False

    # -- wiring ---------------------------------------------------------------------------

    def on_message(self, kind: str, handler: Callable[[dict[str, Any]], None]) -> None:
        """Call `handler` with every message of `kind` another process publishes."""
        self._listeners.setdefault(kind, []).append(handler)

    def on_resync(self, handler: Callable[[], None]) -> None:
        """Call `handler` (on the link's thread) each time Redis is reached after an outage
        or at start, before the request path uses Redis again."""
        self._resyncs.append(handler)

    def start(self) -> None:
        """Connect now (bounded by the timeout), then keep watching in the background."""
        if self._thread is not None:
            return
        try:
            self._connect()
        except FAILURES as e:
            self._lost(e)
        except Exception as e:  # a bug in a re-sync must not stop the bridge from starting
            logger.exception("aibridge: shared state: re-sync failed")
            self._lost(e)
        self._thread = threading.Thread(target=self._run, name="aibridge-state", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=3)
        try:
            if self.reachable:
                self.client.delete(self.alive_key)
        except FAILURES:
            pass
        self.client.close()
        self._listen.close()

    # -- the request path -----------------------------------------------------------------

    def call[T](self, fn: Callable[[redis.Redis], T]) -> T | None:
        """`fn(client)`, or None when Redis is unreachable or this call failed (the caller
        then decides on its local state)."""
        if not self.reachable:
            return None
        try:
            return fn(self.client)
        except FAILURES as e:
            self._lost(e)
            return None

    def status(self) -> dict[str, Any]:
        return {"backend": "redis", "url": safe_url(self.url), "reachable": self.reachable,
                "since": round(self.since, 3), "outages": self.outages}

    # -- health and the background thread ------------------------------------------------

    def _lost(self, error: BaseException) -> None:
        with self._lock:
            if self.reachable:
                self.reachable = False
                self.since = time.time()
                self.outages += 1
            if self._said_down:
                return
            self._said_down = True
        logger.warning(f"aibridge: shared state at {safe_url(self.url)} unreachable "
                       f"({type(error).__name__}: {error}); this process uses its local state "
                       "until it is back (health: degraded)")

    def _connect(self) -> redis.client.PubSub:
        """Subscribe, re-sync, then let the request path use Redis. Raises on failure."""
        pubsub = self._listen.pubsub(ignore_subscribe_messages=True)
        try:
            pubsub.subscribe(self.channel)
            self.client.ping()
            self.client.set(self.alive_key, "1", ex=ALIVE_TTL)
            for handler in self._resyncs:
                handler()
        except BaseException:
            pubsub.close()
            raise
        with self._lock:
            self.reachable = True
            self.since = time.time()
            back, self._said_down = self._said_down, False
        if back:
            logger.warning(f"aibridge: shared state at {safe_url(self.url)} is back; "
                           "re-synced, shared again")
        self._pubsub = pubsub
        return pubsub

    def _run(self) -> None:
        pubsub = getattr(self, "_pubsub", None) if self.reachable else None
        while not self._stop.is_set():
            if pubsub is None:
                if self._stop.wait(self.retry_interval):
                    break
                try:
                    pubsub = self._connect()
                except FAILURES as e:
                    self._lost(e)
                    continue
                except Exception as e:  # a bug: keep trying rather than end the thread
                    logger.exception("aibridge: shared state: re-sync failed")
                    self._lost(e)
                    continue
            try:
                self._listen_until_lost(pubsub)
            except FAILURES as e:
                self._lost(e)
            finally:
                with contextlib.suppress(*FAILURES):
                    pubsub.close()
                pubsub = None

    def _listen_until_lost(self, pubsub: redis.client.PubSub) -> None:
        beat = time.monotonic() + HEARTBEAT_EVERY
        while not self._stop.is_set() and self.reachable:
            message = pubsub.get_message(timeout=0.2)
            if message is not None and message.get("type") == "message":
                self._dispatch(message["data"])
            if time.monotonic() >= beat:
                beat = time.monotonic() + HEARTBEAT_EVERY
                self.client.set(self.alive_key, "1", ex=ALIVE_TTL)

    def _dispatch(self, data: bytes) -> None:
        try:
            message = json.loads(data)
        except ValueError:
            return
        if not isinstance(message, dict) or message.get("p") == self.process:
            return  # our own change: applied when the script answered
        for handler in self._listeners.get(str(message.get("k")), ()):
            try:
                handler(message)
            except Exception:  # one bad message must not stop the listener
                logger.exception("aibridge: applying a shared state change failed")


# -- the admission policies' state --------------------------------------------------------

_RESERVE = """
local h = redis.call('HMGET', KEYS[1], 'spent', 'reserved')
local spent, reserved = tonumber(h[1]) or 0, tonumber(h[2]) or 0
if h[1] == false then redis.call('HSET', KEYS[1], 'spent', 0, 'reserved', 0) end
redis.call('EXPIREAT', KEYS[1], ARGV[3])
if spent + reserved >= tonumber(ARGV[2]) then return {0, spent, reserved} end
redis.call('HINCRBY', KEYS[1], 'reserved', ARGV[1])
return {1, spent, reserved}
"""
_SETTLE = """
local reserved = tonumber(redis.call('HGET', KEYS[1], 'reserved')) or 0
local give = math.min(reserved, tonumber(ARGV[1]))
if give > 0 then redis.call('HINCRBY', KEYS[1], 'reserved', -give) end
local spent = redis.call('HINCRBY', KEYS[1], 'spent', ARGV[2])
if redis.call('HEXISTS', KEYS[1], 'reserved') == 0 then
  redis.call('HSET', KEYS[1], 'reserved', 0)
end
redis.call('EXPIREAT', KEYS[1], ARGV[3])
return {spent, tonumber(redis.call('HGET', KEYS[1], 'reserved'))}
"""
_UNRESERVE = """
local reserved = tonumber(redis.call('HGET', KEYS[1], 'reserved')) or 0
local give = math.min(reserved, tonumber(ARGV[1]))
if give > 0 then redis.call('HINCRBY', KEYS[1], 'reserved', -give) end
return give
"""
_PRIME = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], 'spent', ARGV[1], 'reserved', 0)
  redis.call('EXPIREAT', KEYS[1], ARGV[2])
end
return redis.call('HMGET', KEYS[1], 'spent', 'reserved')
"""
# Windows: a sorted set of entries "<id>:<weight>" scored by time, and their running sum.
_PRUNE = """
local function prune(zkey, skey, edge)
  local gone = redis.call('ZRANGEBYSCORE', zkey, '-inf', edge)
  if #gone > 0 then
    local w = 0
    for _, m in ipairs(gone) do w = w + tonumber(string.match(m, ':(%d+)$')) end
    redis.call('ZREMRANGEBYSCORE', zkey, '-inf', edge)
    redis.call('DECRBY', skey, w)
  end
  return tonumber(redis.call('GET', skey)) or 0
end
local function wait(zkey, sum, limit, now, window)
  if sum < limit then return 0 end
  local left = sum
  local entries = redis.call('ZRANGE', zkey, 0, -1, 'WITHSCORES')
  for i = 1, #entries, 2 do
    left = left - tonumber(string.match(entries[i], ':(%d+)$'))
    if left < limit then return math.max(0, tonumber(entries[i + 1]) + window - now) end
  end
  return window
end
"""
_HIT = _PRUNE + """
local now, window, limit = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local sum = prune(KEYS[1], KEYS[2], now - window)
if sum >= limit then return {tostring(wait(KEYS[1], sum, limit, now, window)), ''} end
redis.call('ZADD', KEYS[1], now, ARGV[4])
redis.call('INCRBY', KEYS[2], 1)
local ms = math.ceil(window * 1000) + 1000
redis.call('PEXPIRE', KEYS[1], ms)
redis.call('PEXPIRE', KEYS[2], ms)
return {'0', ARGV[4]}
"""
_UNHIT = """
if redis.call('ZREM', KEYS[1], ARGV[1]) == 1 then
  redis.call('DECRBY', KEYS[2], tonumber(string.match(ARGV[1], ':(%d+)$')))
end
return 1
"""
_CHARGE = _PRUNE + """
local now, window = tonumber(ARGV[1]), tonumber(ARGV[2])
prune(KEYS[1], KEYS[2], now - window)
redis.call('ZADD', KEYS[1], now, ARGV[3])
redis.call('INCRBY', KEYS[2], tonumber(string.match(ARGV[3], ':(%d+)$')))
local ms = math.ceil(window * 1000) + 1000
redis.call('PEXPIRE', KEYS[1], ms)
redis.call('PEXPIRE', KEYS[2], ms)
return 1
"""
_WAIT = _PRUNE + """
local now, window, limit = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local sum = prune(KEYS[1], KEYS[2], now - window)
if limit < 0 then return sum end
return tostring(wait(KEYS[1], sum, limit, now, window))
"""
# Slots: a hash of per-process counts; a process whose liveness key expired holds none.
_SLOTS = """
local function taken(hkey, prefix)
  local total = 0
  local fields = redis.call('HGETALL', hkey)
  for i = 1, #fields, 2 do
    if redis.call('EXISTS', prefix .. fields[i]) == 1 then
      total = total + tonumber(fields[i + 1])
    else
      redis.call('HDEL', hkey, fields[i])
    end
  end
  return total
end
"""
_ACQUIRE = _SLOTS + """
if taken(KEYS[1], ARGV[3]) >= tonumber(ARGV[2]) then return 0 end
redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
return 1
"""
_RELEASE = """
if redis.call('HINCRBY', KEYS[1], ARGV[1], -1) <= 0 then redis.call('HDEL', KEYS[1], ARGV[1]) end
return 1
"""
_IN_USE = _SLOTS + "return taken(KEYS[1], ARGV[1])"


class RedisState:
    """`StateStore` over Redis, with a local fallback (`MemoryState`) while it is away."""

    def __init__(self, link: RedisLink) -> None:
        self.link = link
        self.local = MemoryState()
        self._p = f"{link.prefix}:s"
        self._alive_prefix = f"{link.prefix}:alive:"
        self._entries = itertools.count(1)
        self._lock = threading.Lock()
        # What the fallback needs and the re-sync pushes back.
        self._known: dict[str, tuple[int, float]] = {}  # money key -> (last spent, expires_at)
        self._in_redis: Counter[str] = Counter()  # money key -> nanos reserved in Redis by us
        self._owed: dict[str, tuple[int, int, float]] = {}  # settled meanwhile: spent, freed
        self._slots: Counter[str] = Counter()  # slot key -> slots this process holds
        c = link.client
        self._scripts = {name: c.register_script(src) for name, src in (
            ("reserve", _RESERVE), ("settle", _SETTLE), ("unreserve", _UNRESERVE),
            ("prime", _PRIME), ("hit", _HIT), ("unhit", _UNHIT), ("charge", _CHARGE),
            ("wait", _WAIT), ("acquire", _ACQUIRE), ("release", _RELEASE),
            ("in_use", _IN_USE))}
        link.on_resync(self.resync)

    def _run(self, name: str, keys: list[str], args: list[Any]) -> Any:
        script = self._scripts[name]
        return self.link.call(lambda client: script(keys=keys, args=args, client=client))

    # -- money ----------------------------------------------------------------------------

    def _money(self, key: str) -> str:
        return f"{self._p}:money:{key}"

    def _remember(self, key: str, spent: int, expires_at: float) -> None:
        self._known[key] = (spent, expires_at)

    def _fallback(self, key: str) -> MemoryState:
        """The local state, with the last spend Redis told of this key."""
        known = self._known.get(key)
        if known is not None:
            self.local.prime(key, known[0], expires_at=known[1])
        return self.local

    def balance(self, key: str) -> Balance | None:
        raw = self.link.call(lambda c: c.hmget(self._money(key), "spent", "reserved"))
        if raw is None:
            return self._fallback(key).balance(key)
        if raw[0] is None:
            return None
        return Balance(int(raw[0]), int(raw[1] or 0))

    def prime(self, key: str, spent: int, *, expires_at: float) -> Balance:
        raw = self._run("prime", [self._money(key)], [spent, int(expires_at)])
        if raw is None:
            return self._fallback(key).prime(key, spent, expires_at=expires_at)
        balance = Balance(int(raw[0]), int(raw[1] or 0))
        self._remember(key, balance.spent, expires_at)
        return balance

    def reserve(self, key: str, amount: int, limit: int, *,
                expires_at: float) -> tuple[bool, Balance]:
        raw = self._run("reserve", [self._money(key)], [amount, limit, int(expires_at)])
        if raw is None:
            return self._fallback(key).reserve(key, amount, limit, expires_at=expires_at)
        ok, before = bool(raw[0]), Balance(int(raw[1]), int(raw[2]))
        self._remember(key, before.spent, expires_at)
        if ok:
            with self._lock:
                self._in_redis[key] += amount
        return ok, before

    def settle(self, key: str, reserved: int, actual: int, *, expires_at: float) -> Balance:
        with self._lock:
            from_redis = min(reserved, self._in_redis[key])
        raw = self._run("settle", [self._money(key)], [from_redis, actual, int(expires_at)])
        if raw is None:
            with self._lock:
                spent, freed, _ = self._owed.get(key, (0, 0, expires_at))
                self._owed[key] = (spent + actual, freed + from_redis, expires_at)
            return self._fallback(key).settle(key, reserved - from_redis, actual,
                                              expires_at=expires_at)
        self._took_back(key, from_redis)
        balance = Balance(int(raw[0]), int(raw[1] or 0))
        self._remember(key, balance.spent, expires_at)
        return balance

    def unreserve(self, key: str, reserved: int) -> None:
        with self._lock:
            from_redis = min(reserved, self._in_redis[key])
        if self._run("unreserve", [self._money(key)], [from_redis]) is None:
            with self._lock:
                spent, freed, expires = self._owed.get(key, (0, 0, time.time() + 86_400))
                self._owed[key] = (spent, freed + from_redis, expires)
            self.local.unreserve(key, reserved - from_redis)
            return
        self._took_back(key, from_redis)
        self.local.unreserve(key, reserved - from_redis)

    def _took_back(self, key: str, amount: int) -> None:
        with self._lock:
            self._in_redis[key] -= amount
            if self._in_redis[key] <= 0:
                del self._in_redis[key]

    def mark_once(self, key: str, mark: str) -> bool:
        marks = f"{self._money(key)}:marks"

        def run(c: redis.Redis) -> int:
            pipe = c.pipeline(transaction=False)
            pipe.sadd(marks, mark)
            pipe.expire(marks, 40 * 86_400)
            return int(pipe.execute()[0])
        added = self.link.call(run)
        if added is None:
            return self.local.mark_once(key, mark)
        return added == 1

    # -- windows --------------------------------------------------------------------------

    def _window(self, key: str) -> list[str]:
        base = f"{self._p}:win:{key}"
        return [base, f"{base}:sum"]

    def _entry(self, weight: int) -> str:
        return f"{self.link.process}:{next(self._entries)}:{weight}"

    def hit(self, key: str, now: float, window: float, limit: int) -> tuple[float, object]:
        raw = self._run("hit", self._window(key), [now, window, limit, self._entry(1)])
        if raw is None:
            return self.local.hit(key, now, window, limit)
        member = raw[1].decode() if isinstance(raw[1], bytes) else str(raw[1])
        return (0.0, member) if member else (float(raw[0]), None)

    def unhit(self, key: str, entry: object) -> None:
        if isinstance(entry, str):  # taken in Redis; lost with it if Redis is away now
            self._run("unhit", self._window(key), [entry])
        else:
            self.local.unhit(key, entry)

    def charge(self, key: str, now: float, amount: int, window: float) -> None:
        if amount <= 0:
            return
        if self._run("charge", self._window(key), [now, window, self._entry(amount)]) is None:
            self.local.charge(key, now, amount, window)

    def wait(self, key: str, now: float, window: float, limit: int) -> float:
        raw = self._run("wait", self._window(key), [now, window, limit])
        return self.local.wait(key, now, window, limit) if raw is None else float(raw)

    def total(self, key: str, now: float, window: float) -> int:
        raw = self._run("wait", self._window(key), [now, window, -1])
        return self.local.total(key, now, window) if raw is None else int(float(raw))

    # -- slots ----------------------------------------------------------------------------

    def _slot(self, key: str) -> str:
        return f"{self._p}:slots:{key}"

    def acquire(self, key: str, limit: int) -> bool:
        raw = self._run("acquire", [self._slot(key)],
                        [self.link.process, limit, self._alive_prefix])
        with self._lock:
            if raw is None:  # alone: this process's own slots against the whole limit
                if self._slots[key] >= limit:
                    return False
            elif not raw:
                return False
            self._slots[key] += 1
            return True

    def release(self, key: str) -> None:
        with self._lock:
            self._slots[key] -= 1
            if self._slots[key] <= 0:
                del self._slots[key]
        self._run("release", [self._slot(key)], [self.link.process])

    def in_use(self, key: str) -> int:
        raw = self._run("in_use", [self._slot(key)], [self._alive_prefix])
        if raw is None:
            with self._lock:
                return self._slots[key]
        return int(raw)

    # -- after an outage ------------------------------------------------------------------

    def resync(self) -> None:
        """On the link's thread, before the request path uses Redis again: add the spend
        settled meanwhile, give back reservations freed meanwhile, and set this process's
        slot counts to what it holds now. Windows start from what Redis kept."""
        with self._lock:
            owed, self._owed = self._owed, {}
            slots = dict(self._slots)
        client = self.link.client
        pipe = client.pipeline(transaction=False)
        for key, (spent, freed, expires) in owed.items():
            if freed:
                self._scripts["unreserve"](keys=[self._money(key)], args=[freed], client=pipe)
            self._scripts["settle"](keys=[self._money(key)], args=[0, spent, int(expires)],
                                    client=pipe)
        for key, count in slots.items():
            pipe.hset(self._slot(key), self.link.process, count)
        try:
            pipe.execute()
        except BaseException:
            with self._lock:  # try again next time
                for key, entry in owed.items():
                    spent, freed, expires = self._owed.get(key, (0, 0, entry[2]))
                    self._owed[key] = (spent + entry[0], freed + entry[1], expires)
            raise
        with self._lock:
            for key, (_, freed, _) in owed.items():
                self._in_redis[key] -= freed
                if self._in_redis[key] <= 0:
                    del self._in_redis[key]
        self.local = MemoryState()  # the fallback's windows are stale once Redis is back

    def sizes(self) -> dict[str, int]:
        return self.local.sizes()
