"""Which credential served an interception, described without the secret (docs/behaviour.md §4).

Only the masked hint and the length are kept, so a `CredentialInfo` can go into logs, records,
traces and mitmproxy flow metadata without leaking a key.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

# Hint of a pooled credential before a key was selected (docs/behaviour.md §4.3); at most 15
# characters like every masked hint, so it fits the VARCHAR(15) hint column of Coder's schema.
FAILOVER_KEY_HINT = "<failover key>"


class CredentialKind(enum.StrEnum):
    """Values match Coder's database enum `credential_kind`, so records map one to one."""

    CENTRALIZED = "centralized"
    BYOK = "byok"


def mask_secret(secret: str) -> str:
    """Reveal at most a few code points at each end: `sk-ant-api03-abcdefgh` ⇒ `sk-a...efgh`.

    Longer secrets reveal more (4 from 20 code points, 2 from 10, 1 from 5, else none), and a secret
    too short to hide anything between the revealed ends becomes `...`.
    """
    n = len(secret)
    if n == 0:
        return ""
    reveal = 4 if n >= 20 else 2 if n >= 10 else 1 if n >= 5 else 0
    if n <= 2 * reveal:
        return "..."
    return f"{secret[:reveal]}...{secret[n - reveal :]}"


@dataclass(frozen=True)
class CredentialInfo:
    """Kind, masked hint and length of a credential; `auth_header` is "" for signed requests."""

    kind: CredentialKind
    hint: str
    length: int
    auth_header: str = ""

    def to_dict(self) -> dict[str, str | int]:
        return {
            "kind": str(self.kind),
            "hint": self.hint,
            "length": self.length,
            "auth_header": self.auth_header,
        }


def new_credential_info(
    kind: CredentialKind | str, secret: str, auth_header: str = ""
) -> CredentialInfo:
    """Describe `secret` (masked here, then dropped); `kind` may be given as its string value.

    Undecodable header bytes arrive as lone surrogates: the hint escapes them, since it goes
    into logs, saved flows and database rows, which need valid UTF-8."""
    hint = mask_secret(secret).encode("utf-8", "backslashreplace").decode("utf-8")
    return CredentialInfo(CredentialKind(kind), hint, len(secret), auth_header)
