"""State shared by several bridge processes in Redis (>= 7, or Valkey): `[state] url`.

`RedisLink` is this process's connection: every call on the request path is bounded by
`[state] timeout` (50 ms by default) and made only while Redis is reachable. The first failed
call marks it unreachable and logs one line; from then on nothing on the request path waits
for Redis: each process decides on its local state (`MemoryState` here, the pools' and
breakers' own state in keys/). A background thread listens for the other processes' changes
(pub/sub), keeps this process's liveness key fresh, and, once Redis answers again, re-syncs
(pushes what changed here meanwhile, pulls what changed there) before the request path uses it
again, with one line in the log.

`RedisState` is the `StateStore` (store.py) of the admission policies over it: a batch of
operations (all a request's admission asks, or all its end gives back) is one Lua script, so
check and change stay one atomic step across processes, in one round trip.
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
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple
from urllib.parse import urlsplit, urlunsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from aibridge.state.memory import MemoryState
from aibridge.state.store import (
    Acquire,
    AdmitOp,
    Balance,
    Below,
    Charge,
    EndOp,
    Hit,
    OneAtATime,
    Outcome,
    Release,
    Reserve,
    Settle,
    Settled,
    Unhit,
    Unreserve,
)

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
        self._beats: list[Callable[[], None]] = []
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

    def on_heartbeat(self, handler: Callable[[], None]) -> None:
        """Call `handler` (on the link's thread) right after each re-sync has let the request
        path use Redis again, and with every heartbeat while it is reachable."""
        self._beats.append(handler)

    def _beat(self) -> None:
        for handler in self._beats:
            try:
                handler()
            except FAILURES:
                raise  # Redis went away: the caller marks it
            except Exception:  # a bug here must not end the link's thread
                logger.exception("aibridge: shared state: heartbeat work failed")

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
        try:
            self._beat()  # what changed between the re-sync and this moment
        except FAILURES as e:
            self._lost(e)
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
                self._beat()

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

MARKS_TTL = 40 * 86_400  # seconds a budget's warning marks are kept (longer than a month)

# One batch of operations (store.py) as one atomic step. KEYS: each operation's keys, in
# order. ARGV: this process (its field in slot hashes), the prefix of liveness keys, then each
# operation's name and arguments. Returns {n, result, result, ...}: n is the 1-based index of
# the operation that refused (what the ones before it took is undone), 0 when none did.
# Money: a hash (spent, reserved) per budget key, and a set of the marks set on it. Windows: a
# sorted set of entries "<id>:<weight>" scored by time, and their running sum. Slots: a hash
# of per-process counts; a process whose liveness key expired holds none.
_BATCH = """
local process, alive = ARGV[1], ARGV[2]
local k, a = 0, 2
local function key() k = k + 1 return KEYS[k] end
local function arg() a = a + 1 return ARGV[a] end
local function weight(member) return tonumber(string.match(member, ':(%d+)$')) end
local function prune(zkey, skey, edge)
  local gone = redis.call('ZRANGEBYSCORE', zkey, '-inf', edge)
  if #gone > 0 then
    local w = 0
    for _, m in ipairs(gone) do w = w + weight(m) end
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
    left = left - weight(entries[i])
    if left < limit then return math.max(0, tonumber(entries[i + 1]) + window - now) end
  end
  return window
end
local function add(zkey, skey, now, window, member)
  redis.call('ZADD', zkey, now, member)
  redis.call('INCRBY', skey, weight(member))
  local ms = math.ceil(window * 1000) + 1000
  redis.call('PEXPIRE', zkey, ms)
  redis.call('PEXPIRE', skey, ms)
end
local function unhit(zkey, skey, member)
  if redis.call('ZREM', zkey, member) == 1 then redis.call('DECRBY', skey, weight(member)) end
end
local function taken(hkey)
  local total = 0
  local fields = redis.call('HGETALL', hkey)
  for i = 1, #fields, 2 do
    if redis.call('EXISTS', alive .. fields[i]) == 1 then
      total = total + tonumber(fields[i + 1])
    else
      redis.call('HDEL', hkey, fields[i])
    end
  end
  return total
end
local function release(hkey)
  if redis.call('HINCRBY', hkey, process, -1) <= 0 then redis.call('HDEL', hkey, process) end
end
local function give_back(mkey, amount)
  local give = math.min(tonumber(redis.call('HGET', mkey, 'reserved')) or 0, amount)
  if give > 0 then redis.call('HINCRBY', mkey, 'reserved', -give) end
end

local out, undo = {0}, {}
local function refuse(result)
  table.insert(out, result)
  for i = #undo, 1, -1 do undo[i]() end
  out[1] = #out - 1
  return out
end
while a < #ARGV do
  local op = arg()
  if op == 'reserve' then
    local m, amount, limit, expires = key(), arg(), tonumber(arg()), arg()
    local h = redis.call('HMGET', m, 'spent', 'reserved')
    local spent, reserved = tonumber(h[1]) or 0, tonumber(h[2]) or 0
    if h[1] == false then redis.call('HSET', m, 'spent', 0, 'reserved', 0) end
    redis.call('EXPIREAT', m, expires)
    if spent + reserved >= limit then return refuse({0, spent, reserved}) end
    redis.call('HINCRBY', m, 'reserved', amount)
    table.insert(undo, function() give_back(m, tonumber(amount)) end)
    table.insert(out, {1, spent, reserved})
  elseif op == 'acquire' then
    local h, limit = key(), tonumber(arg())
    if taken(h) >= limit then return refuse({0}) end
    redis.call('HINCRBY', h, process, 1)
    table.insert(undo, function() release(h) end)
    table.insert(out, {1})
  elseif op == 'hit' then
    local z, s = key(), key()
    local now, window, limit, member = tonumber(arg()), tonumber(arg()), tonumber(arg()), arg()
    local sum = prune(z, s, now - window)
    if sum >= limit then return refuse({0, tostring(wait(z, sum, limit, now, window))}) end
    add(z, s, now, window, member)
    table.insert(undo, function() unhit(z, s, member) end)
    table.insert(out, {1, member})
  elseif op == 'below' then
    local z, s = key(), key()
    local now, window, limit = tonumber(arg()), tonumber(arg()), tonumber(arg())
    local sum = prune(z, s, now - window)
    local w = wait(z, sum, limit, now, window)
    if w > 0 then return refuse({0, tostring(w), sum}) end
    table.insert(out, {1, tostring(w), sum})
  elseif op == 'settle' then
    local m, marks = key(), key()
    local reserved, actual, expires, n = tonumber(arg()), arg(), arg(), tonumber(arg())
    give_back(m, reserved)
    local spent = redis.call('HINCRBY', m, 'spent', actual)
    if redis.call('HEXISTS', m, 'reserved') == 0 then redis.call('HSET', m, 'reserved', 0) end
    redis.call('EXPIREAT', m, expires)
    local result = {spent, tonumber(redis.call('HGET', m, 'reserved'))}
    local before, set = spent - tonumber(actual), false
    for _ = 1, n do
      local mark, threshold = arg(), tonumber(arg())
      if before < threshold and threshold <= spent and redis.call('SADD', marks, mark) == 1 then
        table.insert(result, mark)
        set = true
      end
    end
    if set then redis.call('EXPIRE', marks, MARKS_TTL) end
    table.insert(out, result)
  elseif op == 'unreserve' then
    give_back(key(), tonumber(arg()))
    table.insert(out, {1})
  elseif op == 'release' then
    release(key())
    table.insert(out, {1})
  elseif op == 'unhit' then
    local z, s = key(), key()
    unhit(z, s, arg())
    table.insert(out, {1})
  elseif op == 'charge' then
    local z, s = key(), key()
    local now, window, member = tonumber(arg()), tonumber(arg()), arg()
    prune(z, s, now - window)
    add(z, s, now, window, member)
    table.insert(out, {1})
  elseif op == 'prime' then
    local m, spent, expires = key(), arg(), arg()
    if redis.call('EXISTS', m) == 0 then
      redis.call('HSET', m, 'spent', spent, 'reserved', 0)
      redis.call('EXPIREAT', m, expires)
    end
    local h = redis.call('HMGET', m, 'spent', 'reserved')
    table.insert(out, {h[1] or '0', h[2] or '0'})
  elseif op == 'in_use' then
    table.insert(out, {taken(key())})
  else
    return redis.error_reply('unknown operation ' .. tostring(op))
  end
end
return out
""".replace("MARKS_TTL", str(MARKS_TTL))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisState(OneAtATime):
    """`StateStore` over Redis: each batch one Lua script, one round trip. While Redis is
    away, the batch runs on a local fallback (`MemoryState`), which knows the last spend Redis
    told of each budget and holds this process's own slots."""

    def __init__(self, link: RedisLink) -> None:
        self.link = link
        self.local = MemoryState()  # the fallback; its slots are this process's, always
        self._p = f"{link.prefix}:s"
        self._alive_prefix = f"{link.prefix}:alive:"
        self._entries = itertools.count(1)
        self._lock = threading.Lock()
        # What the fallback needs and the re-sync pushes back.
        self._known: dict[str, tuple[int, float]] = {}  # money key -> (last spent, expires_at)
        self._in_redis: Counter[str] = Counter()  # money key -> nanos reserved in Redis by us
        self._owed: dict[str, tuple[int, int, float]] = {}  # settled meanwhile: spent, freed
        # Concurrency keys this process ever took a slot of: its count in each is kept in Redis
        # as one field, which `sync_slots` sets to what the process holds (0 included).
        self._slot_keys: set[str] = set()
        self._batch = link.client.register_script(_BATCH)
        link.on_resync(self.resync)
        link.on_heartbeat(self.sync_slots)

    # -- keys and the wire ----------------------------------------------------------------

    def _money(self, key: str) -> str:
        return f"{self._p}:money:{key}"

    def _window(self, key: str) -> tuple[str, str]:
        base = f"{self._p}:win:{key}"
        return base, f"{base}:sum"

    def _slot(self, key: str) -> str:
        return f"{self._p}:slots:{key}"

    def _entry(self, weight: int) -> str:
        return f"{self.link.process}:{next(self._entries)}:{weight}"

    def _encode(self, ops: Sequence[tuple[Any, ...]]) -> tuple[list[str], list[Any]]:
        """KEYS and ARGV of `_BATCH` for `ops` (store.py's, and the private prime and
        in_use)."""
        keys: list[str] = []
        args: list[Any] = [self.link.process, self._alive_prefix]
        for op in ops:
            kind = type(op)
            if kind is Reserve:
                keys.append(self._money(op.key))
                args += ("reserve", op.amount, op.limit, int(op.expires_at))
            elif kind is Acquire:
                keys.append(self._slot(op.key))
                args += ("acquire", op.limit)
            elif kind is Hit:
                keys += self._window(op.key)
                args += ("hit", op.now, op.window, op.limit, self._entry(1))
            elif kind is Below:
                keys += self._window(op.key)
                args += ("below", op.now, op.window, op.limit)
            elif kind is Settle:
                money = self._money(op.key)
                keys += (money, f"{money}:marks")
                args += ("settle", op.reserved, op.actual, int(op.expires_at), len(op.marks))
                for mark, threshold in op.marks:
                    args += (mark, threshold)
            elif kind is Unreserve:
                keys.append(self._money(op.key))
                args += ("unreserve", op.amount)
            elif kind is Release:
                keys.append(self._slot(op.key))
                args.append("release")
            elif kind is Unhit:
                keys += self._window(op.key)
                args += ("unhit", op.entry)
            elif kind is Charge:
                keys += self._window(op.key)
                args += ("charge", op.now, op.window, self._entry(op.amount))
            elif kind is _Prime:
                keys.append(self._money(op.key))
                args += ("prime", op.spent, int(op.expires_at))
            elif kind is _InUse:
                keys.append(self._slot(op.key))
                args.append("in_use")
            else:
                raise TypeError(f"not a state operation: {op!r}")
        return keys, args

    def _run(self, ops: Sequence[tuple[Any, ...]]) -> list[Any] | None:
        """The script's answer for `ops`, or None: Redis is away (decide locally)."""
        keys, args = self._encode(ops)
        script = self._batch
        return self.link.call(lambda client: script(keys=keys, args=args, client=client))

    # -- admission --------------------------------------------------------------------------

    def admit(self, ops: Sequence[AdmitOp]) -> Outcome:
        for op in ops:
            if type(op) is Acquire and op.key not in self._slot_keys:
                with self._lock:
                    self._slot_keys.add(op.key)
        raw = self._run(ops)
        if raw is None:
            return self._admit_locally(ops)
        refused = int(raw[0]) - 1 if raw[0] else None
        results: list[object] = []
        slots: list[str] = []
        for op, answer in zip(ops, raw[1:], strict=False):
            kind = type(op)
            if kind is Reserve:
                before = Balance(int(answer[1]), int(answer[2]))
                self._remember(op.key, before.spent, op.expires_at)
                if refused is None:
                    with self._lock:
                        self._in_redis[op.key] += op.amount
                results.append(before)
            elif kind is Acquire:
                slots.append(op.key)
                results.append(None)
            elif kind is Hit:
                results.append(_text(answer[1]) if answer[0] else float(_text(answer[1])))
            else:
                results.append((float(_text(answer[1])), int(answer[2])))
        if refused is None and slots:
            self.local.hold_slots(slots)
        return Outcome(refused, results)

    def _admit_locally(self, ops: Sequence[AdmitOp]) -> Outcome:
        for op in ops:
            if type(op) is Reserve:
                self._fallback(op.key)
        return self.local.admit(ops)

    # -- the end of a request -------------------------------------------------------------

    def end(self, ops: Sequence[EndOp]) -> list[object]:
        """Redis' part of every operation in one script; what was taken here (during an
        outage) is given back here."""
        parts = [self._redis_part(op) for op in ops]
        sent = [part for part in parts if part is not None]
        raw = self._run(sent) if sent else []
        answers = iter(raw[1:] if raw is not None else ())
        return [self._ended(op, part, next(answers) if part is not None and raw is not None
                            else None, reached=raw is not None)
                for op, part in zip(ops, parts, strict=True)]

    def _redis_part(self, op: EndOp) -> EndOp | None:
        """What of `op` Redis does, or None (nothing there)."""
        kind = type(op)
        if kind is Settle:
            return op._replace(reserved=self._reserved_in_redis(op.key, op.reserved))
        if kind is Unreserve:
            amount = self._reserved_in_redis(op.key, op.amount)
            return op._replace(amount=amount) if amount else None
        if kind is Release:
            self.local.end((op,))  # this process's count, wherever the slot was taken
            return op
        if kind is Unhit:
            return op if isinstance(op.entry, str) else None  # else taken here in an outage
        return op if op.amount > 0 else None

    def _ended(self, op: EndOp, part: EndOp | None, answer: Any, *, reached: bool) -> object:
        """`op`'s result, from Redis' `answer` to its `part`; `reached`: Redis answered."""
        kind = type(op)
        if kind is Settle:
            assert isinstance(part, Settle)
            if not reached:
                self._owe(op.key, op.actual, part.reserved, op.expires_at)
                self._fallback(op.key)
                return self.local.end((op._replace(reserved=op.reserved - part.reserved),))[0]
            self._took_back(op.key, part.reserved)
            settled = Settled(Balance(int(answer[0]), int(answer[1])),
                              tuple(_text(m) for m in answer[2:]))
            self._remember(op.key, settled.balance.spent, op.expires_at)
            return settled
        if kind is Unreserve:
            in_redis = part.amount if isinstance(part, Unreserve) else 0
            if in_redis and reached:
                self._took_back(op.key, in_redis)
            elif in_redis:
                self._owe(op.key, 0, in_redis, None)
            if op.amount > in_redis:
                self.local.end((op._replace(amount=op.amount - in_redis),))
        elif (kind is Unhit and part is None) or (kind is Charge and part and not reached):
            self.local.end((op,))  # (an entry Redis took is lost with it: nothing to unhit)
        return None

    def _reserved_in_redis(self, key: str, amount: int) -> int:
        """How much of a reservation of `amount` on `key` was made in Redis (the rest was
        made here during an outage)."""
        with self._lock:
            return min(amount, self._in_redis[key])

    def _owe(self, key: str, spent: int, freed: int, expires_at: float | None) -> None:
        """Redis is away: the re-sync adds `spent` and gives back `freed` when it is back."""
        with self._lock:
            before, given, expires = self._owed.get(key, (0, 0, time.time() + 86_400))
            self._owed[key] = (before + spent, given + freed, expires_at or expires)

    # -- money ----------------------------------------------------------------------------

    def _remember(self, key: str, spent: int, expires_at: float) -> None:
        self._known[key] = (spent, expires_at)

    def _fallback(self, key: str) -> MemoryState:
        """The local state, with the last spend Redis told of this key."""
        known = self._known.get(key)
        if known is not None:
            self.local.prime(key, known[0], expires_at=known[1])
        return self.local

    def _took_back(self, key: str, amount: int) -> None:
        with self._lock:
            self._in_redis[key] -= amount
            if self._in_redis[key] <= 0:
                del self._in_redis[key]

    def balance(self, key: str) -> Balance | None:
        raw = self.link.call(lambda c: c.hmget(self._money(key), "spent", "reserved"))
        if raw is None:
            return self._fallback(key).balance(key)
        if raw[0] is None:
            return None
        return Balance(int(raw[0]), int(raw[1] or 0))

    def prime(self, key: str, spent: int, *, expires_at: float) -> Balance:
        raw = self._run((_Prime(key, spent, expires_at),))
        if raw is None:
            return self._fallback(key).prime(key, spent, expires_at=expires_at)
        balance = Balance(int(raw[1][0]), int(raw[1][1]))
        self._remember(key, balance.spent, expires_at)
        return balance

    def mark_once(self, key: str, mark: str) -> bool:
        marks = f"{self._money(key)}:marks"

        def run(c: redis.Redis) -> int:
            pipe = c.pipeline(transaction=False)
            pipe.sadd(marks, mark)
            pipe.expire(marks, MARKS_TTL)
            return int(pipe.execute()[0])
        added = self.link.call(run)
        if added is None:
            return self.local.mark_once(key, mark)
        return added == 1

    # -- windows and slots ------------------------------------------------------------------

    def total(self, key: str, now: float, window: float) -> int:
        result = self.admit((Below(key, now, window, 1 << 62),)).results[0]
        assert isinstance(result, tuple)
        return int(result[1])

    def in_use(self, key: str) -> int:
        raw = self._run((_InUse(key),))
        return self.local.in_use(key) if raw is None else int(raw[1][0])

    # -- after an outage ------------------------------------------------------------------

    def resync(self) -> None:
        """On the link's thread, before the request path uses Redis again: load the script
        (so no request waits for it), add the spend settled meanwhile, give back reservations
        freed meanwhile, and set this process's slot counts to what it holds now. Windows
        start from what Redis kept."""
        client = self.link.client
        client.script_load(_BATCH)
        with self._lock:
            owed, self._owed = self._owed, {}
        ops: list[EndOp] = []
        for key, (spent, freed, expires) in owed.items():
            if freed:
                ops.append(Unreserve(key, freed))
            ops.append(Settle(key, 0, spent, expires))
        pipe = client.pipeline(transaction=False)
        if ops:
            keys, args = self._encode(ops)
            self._batch(keys=keys, args=args, client=pipe)
        self._write_slots(pipe, self._tracked_slots(), self.local.slot_counts())
        try:
            if len(pipe):
                pipe.execute()
        except BaseException:
            with self._lock:  # try again next time
                for key, entry in owed.items():
                    spent, freed, expires = self._owed.get(key, (0, 0, entry[2]))
                    self._owed[key] = (spent + entry[0], freed + entry[1], expires)
            raise
        for key, (_, freed, _) in owed.items():
            self._took_back(key, freed)
        self.local.forget_all_but_slots()  # the fallback's money and windows are stale now

    def sync_slots(self) -> None:
        """This process's field of each concurrency key set to the slots it holds now. Counts
        change on the request path while a re-sync runs, so one taken or given back between
        the re-sync's look and the moment Redis is used again would otherwise stay counted
        (a slot lost for good) or missing; this runs right after that moment and with every
        heartbeat, so any such difference lasts a few seconds at most. The local count stays
        still while the fields are written (one round trip)."""
        keys = self._tracked_slots()
        if not keys:
            return

        def write(counts: dict[str, int]) -> None:
            pipe = self.link.client.pipeline(transaction=False)
            self._write_slots(pipe, keys, counts)
            pipe.execute()

        self.local.with_slot_counts(write)

    def _write_slots(self, pipe: Any, keys: Sequence[str], counts: dict[str, int]) -> None:
        """This process's field of each concurrency key in `keys` set to its count (0
        included), on `pipe`."""
        for key in keys:
            pipe.hset(self._slot(key), self.link.process, counts.get(key, 0))

    def _tracked_slots(self) -> list[str]:
        with self._lock:
            return sorted(self._slot_keys)

    def sizes(self) -> dict[str, int]:
        return self.local.sizes()


class _Prime(NamedTuple):
    key: str
    spent: int
    expires_at: float


class _InUse(NamedTuple):
    key: str
