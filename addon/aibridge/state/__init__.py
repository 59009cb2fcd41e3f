"""Shared state of the admission policies: budget spend, rate-limit windows, in-flight slots.

store.py   the interface (`StateStore`): each operation is one atomic step, so an
           implementation over Redis (one Lua script per method) can replace the in-process
           one for several bridge processes
memory.py  `MemoryState`, the in-process implementation
ledger.py  what each in-flight interception holds, settled when it ends
"""
