"""Shared state of the admission policies: budget spend, rate-limit windows, in-flight slots.

store.py         the interface (`StateStore`): a request's admission, and its end, are each
                 one batch of operations run as one atomic step
memory.py        `MemoryState`, the in-process implementation
redis.py         `RedisState` over Redis (`[state] url`): a batch is one Lua script, one
                 round trip; the link to Redis, its health and its fallback
redis_shared.py  key states, circuit breakers and failed logins shared through Redis
ledger.py        what each in-flight interception holds, settled (one batch) when it ends
"""
