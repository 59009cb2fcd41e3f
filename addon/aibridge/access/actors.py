"""Who is calling: the actors file and proxy credentials.

A client authenticates with `HTTPS_PROXY=http://<anything>:<token>@host:port`; the token picks
the actor. Tokens may be stored hashed (`sha256:<hex>`) so the file itself is not a secret.
Without an actors file there is no proxy auth and everything is attributed to the local user.
"""

from __future__ import annotations

import base64
import binascii
import getpass
import hashlib
import hmac
import tomllib
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from aibridge.access.oidc import OidcValidator, looks_like_jwt
from aibridge.config import ConfigError
from aibridge.intercept import Actor

REALM = "AI Bridge"


class _ActorEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(min_length=1)
    token: str = Field(min_length=1)
    metadata: dict[str, str | int | float | bool] = Field(default_factory=dict)

    @field_validator("token")
    @classmethod
    def _token(cls, token: str) -> str:
        if token.startswith("sha256:"):
            digest = token.removeprefix("sha256:").lower()
            if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
                raise ValueError("sha256: tokens need 64 hex digits")
        return token

    def digest(self) -> bytes:
        if self.token.startswith("sha256:"):
            return bytes.fromhex(self.token.removeprefix("sha256:"))
        return token_digest(self.token)


class _ActorsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    actors: list[_ActorEntry] = Field(default_factory=list)


def token_digest(token: str) -> bytes:
    # surrogateescape: header values carry undecodable bytes as lone surrogates.
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()


@dataclass(frozen=True)
class ActorDirectory:
    """Maps proxy tokens (by SHA-256, so lookups never compare secrets byte by byte) to actors."""

    by_digest: dict[bytes, Actor]
    source: Path | None
    missing: bool = False  # the file is gone and `[auth] on_missing = "deny"`: nobody passes
    oidc: OidcValidator | None = None  # `[auth.oidc]`: sign-in tokens as proxy passwords

    @property
    def requires_auth(self) -> bool:
        return self.source is not None or self.oidc is not None

    def by_token_digest(self, digest: bytes | None) -> Actor | None:
        """The actor a token already checked once (by `authenticate`) belongs to now: the
        digest of a secret, not the secret, so a plain lookup leaks nothing. A sign-in token
        counts while it has not expired."""
        if not digest:
            return None
        actor = self.by_digest.get(digest)
        if actor is None and self.oidc is not None:
            identity = self.oidc.by_digest(digest)
            actor = identity.actor if identity is not None else None
        return actor

    def expiry(self, digest: bytes | None) -> float | None:
        """When an authenticated token stops counting (a sign-in token's `exp`); None: never."""
        if self.oidc is None or not digest or digest in self.by_digest:
            return None
        identity = self.oidc.by_digest(digest)
        return identity.expires if identity is not None else None

    def authenticate(self, token: str | None) -> Actor | None:
        """Compares against every stored digest in constant time, so neither the outcome's
        timing nor which entry matched tells an attacker anything. A token that is none of
        them and looks like a JWT is checked against the issuer's keys (access/oidc.py)."""
        if not token:
            return None
        presented = token_digest(token)
        found = None
        for digest, actor in self.by_digest.items():
            if hmac.compare_digest(digest, presented):
                found = actor
        if found is None and self.oidc is not None and looks_like_jwt(token):
            identity = self.oidc.authenticate(token)
            found = identity.actor if identity is not None else None
        return found


def local_user_actor() -> Actor:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry, e.g. in some containers
        user = "local"
    return Actor(id=user, metadata={"Username": user})


def load_actors(path: Path | None, *, deny_if_missing: bool = False) -> ActorDirectory:
    """`deny_if_missing`: a file that does not exist gives a directory nobody passes instead
    of a `ConfigError` (a reload with `on_missing = "deny"`)."""
    if path is None:
        return ActorDirectory({}, None)
    if deny_if_missing and not path.exists():
        return ActorDirectory({}, path, missing=True)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
        parsed = _ActorsFile.model_validate(raw)
    except OSError as e:
        raise ConfigError(f"cannot read actors file {path}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"actors file {path} is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"actors file {path} is not valid TOML: {e}") from None
    except ValidationError as e:
        raise ConfigError(f"actors file {path}: {e.errors()[0]['msg']} at "
                          f"{'.'.join(map(str, e.errors()[0]['loc']))}") from None
    by_digest: dict[bytes, Actor] = {}
    ids: set[str] = set()
    for entry in parsed.actors:
        if entry.id in ids:
            raise ConfigError(f"actors file {path}: duplicate actor id {entry.id!r}")
        digest = entry.digest()
        if digest in by_digest:
            raise ConfigError(f"actors file {path}: actor {entry.id!r} reuses another's token")
        ids.add(entry.id)
        metadata = {k: str(v).lower() if isinstance(v, bool) else str(v)
                    for k, v in entry.metadata.items()}
        try:
            by_digest[digest] = Actor(id=entry.id, metadata=metadata)
        except ValueError as e:  # values that could not travel in a header
            raise ConfigError(f"actors file {path}: actor {entry.id!r}: {e}") from None
    if not by_digest:
        raise ConfigError(f"actors file {path} defines no [[actors]]")
    return ActorDirectory(by_digest, path)


def parse_proxy_authorization(value: str | None) -> str | None:
    """The token from `Proxy-Authorization: Basic base64(user:token)`.

    The user part is free (clients need something there); a URL with only `token@` is accepted
    too, since people write `http://TOKEN@host:port` as often as `http://x:TOKEN@host:port`.
    """
    return parse_proxy_credentials(value)[1]


def parse_proxy_credentials(value: str | None) -> tuple[str, str | None]:
    """(user name, token) from a `Proxy-Authorization` header; the user name is "" when there
    is none, and also when the only part given is the token (`http://TOKEN@host`): the name
    must never hold a secret, since failure counting keys on it."""
    if not value:
        return "", None
    scheme, _, encoded = value.strip().partition(" ")
    if scheme.lower() != "basic" or not encoded.strip():
        return "", None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):  # ValueError: non-ASCII input, bad UTF-8
        return "", None
    user, sep, password = decoded.partition(":")
    if sep and password:
        return user, password
    return "", user or None
