"""Key states, circuit breakers and failed proxy logins shared through Redis (`[state] url`).

The pools and breakers (keys/) decide on their own state, which costs no round trip; this
object is told of their changes (keys/sharing.py's protocols, access/failure_limit.py's
`SharedFailures`), merges each one into Redis with one Lua script that also publishes the
merged result, and hands that to the pools and breakers of every other process as it arrives
(`RedisLink` listens). After an outage the pools push their state and pull the others'; the
breakers pull the ones that are not closed.

In Redis:
- `<prefix>:key:<provider>:<key hash>` a hash: cooling until, dead, dead since, changed (wall
  clock); never the key.
- `<prefix>:circuit:<hash>` a hash per (provider, route, model) that is or was not closed,
  `…:fails` the failure times of a closed one, `<prefix>:circuits` the index of them.
- `<prefix>:auth:…` the failed-login counters (fixed windows, weighted like the local ones) and
  the pairs that logged in, by client address and a hash of the user name.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import time
from collections.abc import Iterable
from typing import Any, Protocol

import redis

from aibridge.state.redis import RedisLink, RedisState
from aibridge.state.views import BreakerView, KeyView

logger = logging.getLogger("aibridge")
KEY_TTL = 7 * 86_400  # seconds a key's shared state outlives its last change

_PUBLISH_KEY = """
local h = redis.call('HMGET', KEYS[1], 'cool', 'dead', 'since', 'changed')
local cool, dead = tonumber(h[1]) or 0, h[2] or '0'
local since, changed = tonumber(h[3]) or 0, tonumber(h[4]) or -1
local a_cool, a_dead = tonumber(ARGV[1]), ARGV[2]
local a_since, a_changed = tonumber(ARGV[3]), tonumber(ARGV[4])
if a_cool > cool then cool = a_cool end
if a_changed >= changed then dead, changed = a_dead, a_changed end
if dead == '1' and a_dead == '1' and a_since > since then since = a_since end
redis.call('HSET', KEYS[1], 'cool', string.format('%.3f', cool), 'dead', dead,
  'since', string.format('%.3f', since), 'changed', string.format('%.6f', changed))
redis.call('EXPIRE', KEYS[1], ARGV[8])
local view = {string.format('%.3f', cool), dead, string.format('%.3f', since),
  string.format('%.6f', changed)}
redis.call('PUBLISH', ARGV[5], cjson.encode({k = 'key', p = ARGV[6], provider = ARGV[7],
  key = ARGV[9], view = view}))
return view
"""
_TAKE_PROBE = """
local h = redis.call('HMGET', KEYS[1], 'dead', 'since')
if h[1] ~= '1' then return 1 end
if tonumber(ARGV[1]) >= (tonumber(h[2]) or 0) + tonumber(ARGV[2]) then
  redis.call('HSET', KEYS[1], 'since', string.format('%.3f', tonumber(ARGV[1])))
  return 1
end
return 0
"""
# KEYS: hash, fails, generation counter, index. ARGV[1..]: now, window, threshold, open_for,
# probes, channel, process, provider, route, model, then the call's own arguments.
_CIRCUIT = """
local now, window, threshold = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local open_for, probes = tonumber(ARGV[4]), tonumber(ARGV[5])
local function view()
  local h = redis.call('HMGET', KEYS[1], 'state', 'opened', 'gen')
  return {h[1] or 'closed', h[2] or '0', h[3] or '0'}
end
local function transition(to)
  local gen = redis.call('INCR', KEYS[3])
  redis.call('HSET', KEYS[1], 'state', to, 'opened', string.format('%.3f', now), 'gen', gen,
    'probes', 0, 'last_probe', 0, 'provider', ARGV[8], 'route', ARGV[9], 'model', ARGV[10])
  redis.call('EXPIRE', KEYS[1], math.ceil(open_for * 4 + window) + 3600)
  redis.call('DEL', KEYS[2])
  redis.call('SADD', KEYS[4], KEYS[1])
  local v = view()
  redis.call('PUBLISH', ARGV[6], cjson.encode({k = 'circuit', p = ARGV[7], provider = ARGV[8],
    route = ARGV[9], model = ARGV[10], view = v}))
  return v
end
local op = ARGV[11]
local h = redis.call('HMGET', KEYS[1], 'state', 'opened', 'gen', 'probes', 'last_probe')
local state = h[1] or 'closed'
if op == 'failed' then
  if state ~= 'closed' then return {0, '0', view()} end
  redis.call('ZADD', KEYS[2], now, ARGV[12])
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. (now - window))
  redis.call('PEXPIRE', KEYS[2], math.ceil(window * 1000) + 1000)
  if redis.call('ZCARD', KEYS[2]) >= threshold then return {0, '0', transition('open')} end
  return {0, '0', view()}
elseif op == 'probe' then
  if state == 'closed' then return {1, '0', view()} end
  if state == 'open' then
    local opened = tonumber(h[2]) or 0
    if now - opened < open_for then return {0, tostring(opened + open_for - now), view()} end
    transition('half_open')
    h = redis.call('HMGET', KEYS[1], 'state', 'opened', 'gen', 'probes', 'last_probe')
  end
  local out, last = tonumber(h[4]) or 0, tonumber(h[5]) or 0
  if out >= probes and now - last >= open_for then out = 0 end
  if out < probes then
    redis.call('HSET', KEYS[1], 'probes', out + 1, 'last_probe', string.format('%.3f', now))
    return {1, '0', view()}
  end
  return {0, ARGV[12], view()}
elseif op == 'decided' then
  if state ~= 'half_open' or h[3] ~= ARGV[12] then return {0, '0', view()} end
  if ARGV[13] == '1' then return {0, '0', transition('open')} end
  return {0, '0', transition('closed')}
elseif op == 'release' then
  if state == 'half_open' and h[3] == ARGV[12] and (tonumber(h[4]) or 0) > 0 then
    redis.call('HINCRBY', KEYS[1], 'probes', -1)
  end
  return {0, '0', view()}
end
return {0, '0', view()}
"""
_AUTH_FAILED = """
local overlap = tonumber(ARGV[1])
local ttl = tonumber(ARGV[2])
local reached = {}
local kinds = {'user', 'address', 'global'}
for i = 1, 3 do
  local current, previous = KEYS[2 * i - 1], KEYS[2 * i]
  local before = (tonumber(redis.call('GET', previous)) or 0) * overlap
    + (tonumber(redis.call('GET', current)) or 0)
  redis.call('INCR', current)
  redis.call('EXPIRE', current, ttl)
  local limit = tonumber(ARGV[2 + i])
  if before < limit and limit <= before + 1 then table.insert(reached, kinds[i]) end
end
return reached
"""


class _Pool(Protocol):
    provider: str
    key_ids: list[str]

    def apply_shared(self, key: str, view: KeyView) -> None: ...

    def shared_view(self, index: int) -> KeyView: ...


class _Breakers(Protocol):
    def apply_shared(self, key: tuple[str, str, str], view: BreakerView) -> None: ...


class _Policy(Protocol):
    per_user: int
    per_address: int
    global_limit: int
    window: float
    known_ttl: float


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _key_view(raw: Iterable[Any]) -> KeyView:
    cool, dead, since, changed = (_text(v) for v in raw)
    return KeyView(float(cool), dead == "1", float(since), float(changed))


def _breaker_view(raw: Iterable[Any]) -> BreakerView:
    state, opened, generation = (_text(v) for v in raw)
    return BreakerView(state, float(opened), int(generation))


class RedisSharing:
    """`SharedKeys`, `SharedCircuits` and `SharedFailures` over one `RedisLink`."""

    def __init__(self, link: RedisLink) -> None:
        self.link = link
        self.pools: dict[str, _Pool] = {}
        self.breakers: _Breakers | None = None
        p = link.prefix
        self._keys, self._circuits, self._auth = f"{p}:key", f"{p}:circuit", f"{p}:auth"
        c = link.client
        self._publish = c.register_script(_PUBLISH_KEY)
        self._probe = c.register_script(_TAKE_PROBE)
        self._circuit = c.register_script(_CIRCUIT)
        self._auth_failed = c.register_script(_AUTH_FAILED)
        self._failures = 0
        link.on_message("key", self._heard_key)
        link.on_message("circuit", self._heard_circuit)
        link.on_resync(self.resync)

    def track(self, pools: Iterable[_Pool], breakers: _Breakers | None) -> None:
        """The pools and breakers of the settings now in use (a reload brings new ones)."""
        self.pools = {pool.provider: pool for pool in pools}
        self.breakers = breakers

    # -- keys ------------------------------------------------------------------------------

    def _key(self, provider: str, key: str) -> str:
        return f"{self._keys}:{provider}:{key}"

    def _key_args(self, provider: str, key: str, view: KeyView) -> list[Any]:
        return [f"{view.cooling_until:.3f}", "1" if view.dead else "0",
                f"{view.dead_since:.3f}", f"{view.changed:.6f}", self.link.channel,
                self.link.process, provider, KEY_TTL, key]

    def publish_key(self, provider: str, key: str, view: KeyView) -> KeyView | None:
        raw = self.link.call(lambda c: self._publish(
            keys=[self._key(provider, key)], args=self._key_args(provider, key, view), client=c))
        return None if raw is None else _key_view(raw)

    def take_probe(self, provider: str, key: str, now: float,
                   retry_after: float) -> bool | None:
        if math.isinf(retry_after):
            return True  # keys dead until restart are never probed anyway
        raw = self.link.call(lambda c: self._probe(
            keys=[self._key(provider, key)], args=[f"{now:.3f}", retry_after], client=c))
        return None if raw is None else bool(raw)

    def _heard_key(self, message: dict[str, Any]) -> None:
        pool = self.pools.get(str(message.get("provider")))
        if pool is not None:
            pool.apply_shared(str(message.get("key")), _key_view(message["view"]))

    # -- circuits --------------------------------------------------------------------------

    def _circuit_call(self, key: tuple[str, str, str], now: float, window: float,
                      threshold: int, open_for: float, probes: int,
                      *extra: Any) -> tuple[bool, float, BreakerView] | None:
        name = hashlib.sha256("\x00".join(key).encode("utf-8", "surrogateescape")).hexdigest()
        base = f"{self._circuits}:{name[:32]}"
        keys = [base, f"{base}:fails", f"{self._circuits}:generation", f"{self._circuits}s"]
        args = [f"{now:.3f}", window, threshold, open_for, probes, self.link.channel,
                self.link.process, *key, *extra]
        raw = self.link.call(lambda c: self._circuit(keys=keys, args=args, client=c))
        if raw is None:
            return None
        return bool(raw[0]), float(_text(raw[1])), _breaker_view(raw[2])

    def circuit_failed(self, key: tuple[str, str, str], now: float, window: float,
                       threshold: int) -> BreakerView | None:
        self._failures += 1
        result = self._circuit_call(key, now, window, threshold, 0.0, 1, "failed",
                                    f"{self.link.process}:{self._failures}")
        return None if result is None else result[2]

    def circuit_probe(self, key: tuple[str, str, str], now: float, open_for: float,
                      probes: int) -> tuple[bool, float, BreakerView] | None:
        return self._circuit_call(key, now, 1.0, 1, open_for, probes, "probe", 0)

    def circuit_decided(self, key: tuple[str, str, str], generation: int, failure: bool,
                        now: float) -> BreakerView | None:
        result = self._circuit_call(key, now, 1.0, 1, 0.0, 1, "decided", generation,
                                    "1" if failure else "0")
        return None if result is None else result[2]

    def circuit_release(self, key: tuple[str, str, str], generation: int) -> None:
        self._circuit_call(key, 0.0, 1.0, 1, 0.0, 1, "release", generation)

    def _heard_circuit(self, message: dict[str, Any]) -> None:
        if self.breakers is not None:
            key = (str(message.get("provider")), str(message.get("route")),
                   str(message.get("model")))
            self.breakers.apply_shared(key, _breaker_view(message["view"]))

    # -- failed proxy logins ---------------------------------------------------------------

    def _auth_keys(self, address: str, user: str, policy: _Policy,
                   now: float) -> tuple[list[str], float]:
        slot = int(now // policy.window)
        overlap = 1.0 - (now / policy.window - slot)
        who = hashlib.sha256(user.encode("utf-8", "surrogateescape")).hexdigest()[:16]
        pair, addr, every = (f"{self._auth}:u:{address}|{who}", f"{self._auth}:a:{address}",
                             f"{self._auth}:g")
        keys = [f"{pair}:{slot}", f"{pair}:{slot - 1}", f"{addr}:{slot}", f"{addr}:{slot - 1}",
                f"{every}:{slot}", f"{every}:{slot - 1}", f"{self._auth}:k:{address}|{who}"]
        return keys, overlap

    def auth_refused(self, address: str, user: str, policy: _Policy) -> tuple[Any] | None:
        keys, overlap = self._auth_keys(address, user, policy, time.time())
        raw = self.link.call(lambda c: c.mget(keys))
        if raw is None:
            return None
        n = [int(v) if v is not None else 0 for v in raw[:6]]
        if n[1] * overlap + n[0] >= policy.per_user:
            return ("user",)
        if raw[6] is not None:
            return (None,)
        if n[3] * overlap + n[2] >= policy.per_address:
            return ("address",)
        if n[5] * overlap + n[4] >= policy.global_limit:
            return ("global",)
        return (None,)

    def auth_failed(self, address: str, user: str, policy: _Policy) -> list[Any] | None:
        keys, overlap = self._auth_keys(address, user, policy, time.time())
        ttl = math.ceil(policy.window * 2) + 1
        raw = self.link.call(lambda c: self._auth_failed(
            keys=keys[:6], args=[overlap, ttl, policy.per_user, policy.per_address,
                                 policy.global_limit], client=c))
        return None if raw is None else [_text(kind) for kind in raw]

    def auth_succeeded(self, address: str, user: str, policy: _Policy) -> None:
        keys, _ = self._auth_keys(address, user, policy, time.time())

        def run(c: redis.Redis) -> None:
            pipe = c.pipeline(transaction=False)
            pipe.delete(keys[0], keys[1])
            if policy.known_ttl > 0:
                pipe.set(keys[6], "1", ex=max(1, math.ceil(policy.known_ttl)))
            pipe.execute()
        self.link.call(run)

    # -- after an outage -------------------------------------------------------------------

    def resync(self) -> None:
        """On the link's thread: push every key's state here and take the merged result;
        take every breaker that is not closed."""
        self.merge_pools(list(self.pools.values()))
        self._pull_breakers()

    def adopt(self, pools: Iterable[_Pool]) -> None:
        """Pools new to this process (a reload changed their keys) take the shared state."""
        if self.link.reachable:
            with contextlib.suppress(redis.RedisError, OSError):  # the next re-sync will
                self.merge_pools(list(pools))

    def merge_pools(self, pools: list[_Pool]) -> None:
        client = self.link.client
        pipe = client.pipeline(transaction=False)
        for pool in pools:
            for index, key in enumerate(pool.key_ids):
                self._publish(keys=[self._key(pool.provider, key)],
                              args=self._key_args(pool.provider, key, pool.shared_view(index)),
                              client=pipe)
        merged = pipe.execute() if len(pipe) else []
        at = 0
        for pool in pools:
            for key in pool.key_ids:
                pool.apply_shared(key, _key_view(merged[at]))
                at += 1

    def _pull_breakers(self) -> None:
        if self.breakers is None:
            return
        client = self.link.client
        index = f"{self._circuits}s"
        names = [_text(n) for n in client.smembers(index)]
        if not names:
            return
        pipe = client.pipeline(transaction=False)
        for name in names:
            pipe.hmget(name, "state", "opened", "gen", "provider", "route", "model")
        for name, row in zip(names, pipe.execute(), strict=True):
            if row[0] is None:
                client.srem(index, name)  # expired
                continue
            view = _breaker_view(row[:3])
            if view.state != "closed":
                key = (_text(row[3]), _text(row[4]), _text(row[5]))
                self.breakers.apply_shared(key, view)


class Shared:
    """Everything `[state] url` brings: the link, the sharing of keys, circuits and logins,
    and the admission policies' store. One per process, kept across reloads while the
    `[state]` table stays the same."""

    def __init__(self, url: str, *, timeout: float, retry_interval: float,
                 prefix: str) -> None:
        self.settings = (url, timeout, retry_interval, prefix)
        self.link = RedisLink(url, timeout=timeout, retry_interval=retry_interval,
                              prefix=prefix)
        self.sharing = RedisSharing(self.link)
        self.store = RedisState(self.link)

    def start(self) -> None:
        self.link.start()

    def close(self) -> None:
        self.link.close()

    @property
    def degraded(self) -> bool:
        return not self.link.reachable
