"""Plain types shared across layers, with no dependencies inside the package."""

from __future__ import annotations

import enum
import math


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
            # Whole seconds, rounded up: the same figure as the Retry-After header.
            delay = format_duration(math.ceil(self.retry_after))
            return f"all configured keys are rate-limited (retry after {delay})"
        return "all configured keys failed authentication"


def format_duration(seconds: float) -> str:
    """Go `time.Duration` style (`3s`, `1.5s`, `1m0s`), the wording clients already match on."""
    millis = round(seconds * 1000)  # round first, so 59.9996 s is 1m0s and never "60s"
    minutes, millis = divmod(millis, 60_000)
    secs = f"{millis / 1000:.3f}".rstrip("0").rstrip(".") + "s"
    if not minutes:
        return secs
    hours, minutes = divmod(minutes, 60)
    return (f"{hours}h" if hours else "") + f"{minutes}m{secs}"
