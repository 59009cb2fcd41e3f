"""Centralized provider keys: an ordered pool per provider.

The foundation keeps it simple (first key wins); failover, cooldowns and strategies build on
`KeyPool.select` and `KeyPoolError` without changing their callers.
"""

from __future__ import annotations

import enum
import threading
from dataclasses import dataclass


class PoolErrorKind(enum.StrEnum):
    RATE_LIMITED = "rate_limited"
    AUTH_FAILED = "auth_failed"


class KeyPoolError(Exception):
    """No key can serve the request. Carries what the client needs to back off."""

    def __init__(self, kind: PoolErrorKind, retry_after: float = 0.0) -> None:
        self.kind = kind
        self.retry_after = max(0.0, retry_after)
        super().__init__(self.message)

    @property
    def message(self) -> str:
        if self.kind is PoolErrorKind.RATE_LIMITED:
            delay = format_duration(self.retry_after)
            return f"all configured keys are rate-limited (retry after {delay})"
        return "all configured keys failed authentication"


def format_duration(seconds: float) -> str:
    """Go `time.Duration` style (`3s`, `1.5s`, `1m0s`), the wording clients already match on."""
    if seconds < 60:
        return f"{seconds:.3f}".rstrip("0").rstrip(".") + "s"
    minutes, secs = divmod(seconds, 60)
    if minutes < 60:
        return f"{int(minutes)}m{format_duration(secs)}"
    hours, minutes = divmod(int(minutes), 60)
    return f"{hours}h{minutes}m{format_duration(secs)}"


@dataclass(frozen=True)
class Key:
    index: int
    secret: str

    def __repr__(self) -> str:  # never print the secret, even by accident
        return f"Key(index={self.index})"


class KeyPool:
    def __init__(self, provider: str, secrets: list[str]) -> None:
        if not secrets:
            raise ValueError(f"provider {provider!r}: no keys provided")
        if len(set(secrets)) != len(secrets):
            raise ValueError(f"provider {provider!r}: duplicate key")
        self.provider = provider
        self.keys = [Key(i, s) for i, s in enumerate(secrets)]
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.keys)

    def select(self) -> Key:
        """The key for the next upstream attempt (priority order)."""
        with self._lock:
            return self.keys[0]
