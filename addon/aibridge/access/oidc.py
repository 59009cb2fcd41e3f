"""Identity from the company's sign-in: a proxy password that is a JWT the issuer signed.

`[auth.oidc]` names the issuer, the audience and the JWKS URL of the issuer's public keys. A
client sets its proxy password to an ID (or access) token: `HTTPS_PROXY=http://me:<JWT>@bridge`.
The token is accepted when it is signed by one of the issuer's keys with an allowed asymmetric
algorithm (RS256, ES256, ...; never HS* or `none`), names the issuer and the audience, and is
within its `exp` / `nbf` (with `leeway` seconds of clock skew). It becomes an actor: the id
from `id_claim` (default `email`), metadata from the claims `metadata_claims` names (a list,
such as `groups`, is joined with commas; a dotted name reads a nested claim).

The keys are fetched with PyJWT's `PyJWKClient` at start, then refreshed every
`refresh_interval` seconds by a background thread, and sooner (at most every
`UNKNOWN_KID_COOLDOWN` seconds) when a token names a key id not seen yet, as after a key
rotation. The request path never waits for the network: it reads the keys fetched last, so a
token signed by a brand-new key is refused until the refresh that follows has fetched it.

Accepted tokens are remembered by their SHA-256 (never the token), until they expire, so a
connection can be re-checked after a reload and a client re-sending the same token does not
pay for a signature check again.
"""

from __future__ import annotations

import hashlib
import logging
import re
import ssl
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from jwt import PyJWK, PyJWKClient

from aibridge.config import OidcConfig
from aibridge.intercept import Actor

logger = logging.getLogger("aibridge")
# Three base64url parts: what a signed JWT (JWS compact form) looks like. Anything else is
# some other kind of proxy password and never reaches the JWT parser.
JWT_SHAPE = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
UNKNOWN_KID_COOLDOWN = 30.0  # seconds between refreshes asked for by unknown key ids
RETRY_FIRST, RETRY_MAX = 2.0, 60.0  # seconds between attempts while no keys could be fetched
MAX_REMEMBERED = 10_000  # accepted tokens kept (by digest) until they expire
KEY_TYPES = {"RSA": ("RS", "PS"), "EC": ("ES",)}


@dataclass(frozen=True)
class Identity:
    actor: Actor
    expires: float  # the token's `exp`, epoch seconds


def looks_like_jwt(token: str) -> bool:
    return len(token) < 16_384 and JWT_SHAPE.fullmatch(token) is not None


class OidcValidator:
    def __init__(self, config: OidcConfig, base_dir: Path, *, fetch: bool = True,
                 keys_from: OidcValidator | None = None,
                 clock: Any = time.time) -> None:
        """`fetch`: get the keys now (at start); else the refresh thread gets them at once.
        `keys_from`: a validator of the previous configuration whose keys (same JWKS URL)
        serve until then, so a reload does not wait for the network."""
        self.config = config
        self.clock = clock
        self.algorithms = tuple(config.algorithms)
        ca_file = config.resolved_ca_file(base_dir)
        context = ssl.create_default_context()
        if ca_file is not None:  # a private CA, trusted besides the system's
            context.load_verify_locations(cafile=str(ca_file))
        self._client = PyJWKClient(config.jwks_url, cache_jwk_set=False,
                                   timeout=config.fetch_timeout, ssl_context=context,
                                   headers={"User-Agent": "aibridge"})
        self._keys: dict[str | None, tuple[PyJWK, ...]] = {}
        if keys_from is not None and keys_from.config.jwks_url == config.jwks_url:
            self._keys = keys_from._keys
        self._accepted: OrderedDict[bytes, Identity] = OrderedDict()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._asked_at = 0.0
        self.last_error: str | None = None
        if fetch:
            self.refresh()
        # The thread holds the validator weakly: when a reload drops it, the thread ends.
        self._thread = threading.Thread(
            target=_refresh_loop, args=(weakref.ref(self), self._wake, self._stop),
            name="aibridge-oidc-keys", daemon=True)
        weakref.finalize(self, _stop_thread, self._wake, self._stop)
        self._thread.start()
        if not fetch:
            self._wake.set()

    # -- keys ---------------------------------------------------------------------------------

    @property
    def key_count(self) -> int:
        return sum(len(keys) for keys in self._keys.values())

    def refresh(self) -> bool:
        """Fetch the issuer's keys (blocking; never on the request path). Keeps the previous
        keys when it fails."""
        try:
            jwk_set = self._client.get_jwk_set(refresh=True)
        except jwt.PyJWTError as e:
            if self.last_error != str(e):
                logger.error(f"aibridge: OIDC: cannot fetch the keys from "
                             f"{self.config.jwks_url}: {e}")
            self.last_error = str(e)
            return False
        keys: dict[str | None, list[PyJWK]] = {}
        for key in jwk_set.keys:
            families = KEY_TYPES.get(key.key_type or "")
            if families is None or (key.public_key_use not in (None, "sig")):
                continue  # symmetric keys never verify a proxy password; nor encryption keys
            keys.setdefault(key.key_id, []).append(key)
        before = self.key_count
        self._keys = {kid: tuple(found) for kid, found in keys.items()}
        if self.last_error is not None or before != self.key_count:
            logger.info(f"aibridge: OIDC: {self.key_count} signing key(s) from "
                        f"{self.config.jwks_url}")
        self.last_error = None
        return True

    def _ask_refresh(self) -> None:
        now = time.monotonic()
        if now - self._asked_at >= UNKNOWN_KID_COOLDOWN:
            self._asked_at = now
            self._wake.set()

    def close(self) -> None:
        _stop_thread(self._wake, self._stop)

    # -- tokens -------------------------------------------------------------------------------

    def authenticate(self, token: str) -> Identity | None:
        """The identity a token proves, or None (logged with the reason, never the token)."""
        digest = hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()
        known = self.by_digest(digest)
        if known is not None:
            return known
        try:
            identity = self._validate(token)
        except Refused as e:
            logger.info(f"aibridge: OIDC token refused: {e}")
            return None
        with self._lock:
            self._accepted[digest] = identity
            while len(self._accepted) > MAX_REMEMBERED:
                self._accepted.popitem(last=False)
        return identity

    def by_digest(self, digest: bytes | None) -> Identity | None:
        """An accepted token's identity while it has not expired."""
        if digest is None:
            return None
        with self._lock:
            identity = self._accepted.get(digest)
            if identity is not None and identity.expires <= self.clock():
                del self._accepted[digest]
                identity = None
        return identity

    def _validate(self, token: str) -> Identity:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as e:
            raise Refused(f"not a JWT ({e})") from None
        alg = header.get("alg")
        if alg not in self.algorithms:
            raise Refused(f"algorithm {alg!r} is not one of {', '.join(self.algorithms)}")
        kid = header.get("kid")
        candidates = [k for k in (self._keys.get(kid, ()) if kid is not None
                                  else [k for keys in self._keys.values() for k in keys])
                      if alg[:2] in KEY_TYPES.get(k.key_type or "", ())]
        if not candidates:
            self._ask_refresh()
            raise Refused(f"no key of the issuer matches key id {kid!r} and algorithm {alg}"
                          if self._keys else "the issuer's keys are not fetched yet")
        claims = None
        problem: Exception | None = None
        for key in candidates:
            try:
                claims = jwt.decode(
                    token, key=key.key, algorithms=[alg], audience=self.config.audience,
                    issuer=self.config.issuer, leeway=self.config.leeway,
                    options={"require": ["exp", "iss", "aud"]})
                break
            except jwt.InvalidSignatureError as e:
                problem = e  # maybe another key with the same id (or none) verifies it
            except jwt.PyJWTError as e:
                raise Refused(_reason(e)) from None
        if claims is None:
            raise Refused(_reason(problem) if problem else "not verified")
        return Identity(self._actor(claims), float(claims["exp"]))

    def _actor(self, claims: Mapping[str, Any]) -> Actor:
        actor_id = claim(claims, self.config.id_claim)
        if not isinstance(actor_id, str) or not actor_id.strip():
            raise Refused(f"the token has no {self.config.id_claim!r} claim to name the actor")
        metadata = {}
        for key, name in self.config.metadata_claims.items():
            value = claim(claims, name)
            if isinstance(value, list):
                value = ",".join(str(v) for v in value if isinstance(v, str | int | float))
            elif isinstance(value, bool):
                value = str(value).lower()
            elif not isinstance(value, str | int | float):
                continue
            metadata[key] = str(value)
        try:
            return Actor(id=actor_id, metadata=metadata)
        except ValueError as e:  # a value that could not travel in a header
            raise Refused(str(e)) from None


class Refused(Exception):
    """Why a token is not accepted (for the log)."""


def claim(claims: Mapping[str, Any], name: str) -> Any:
    """A claim by name; a dotted name reads nested objects (`realm_access.roles`) unless a
    claim has that literal name."""
    if name in claims:
        return claims[name]
    value: Any = claims
    for part in name.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def _reason(error: Exception) -> str:
    if isinstance(error, jwt.ExpiredSignatureError):
        return "expired"
    if isinstance(error, jwt.InvalidAudienceError):
        return "wrong audience"
    if isinstance(error, jwt.InvalidIssuerError):
        return "wrong issuer"
    if isinstance(error, jwt.InvalidSignatureError):
        return "bad signature"
    if isinstance(error, jwt.ImmatureSignatureError):
        return "not valid yet"
    return str(error) or type(error).__name__


def _refresh_loop(ref: weakref.ref[OidcValidator], wake: threading.Event,
                  stop: threading.Event) -> None:
    retry = RETRY_FIRST
    while not stop.is_set():
        validator = ref()
        if validator is None:
            return
        interval = validator.config.refresh_interval if validator.key_count else retry
        del validator  # not held while waiting: a dropped validator ends this thread
        wake.wait(interval)
        wake.clear()
        validator = ref()
        if validator is None or stop.is_set():
            return
        ok = validator.refresh()
        retry = RETRY_FIRST if ok else min(retry * 2, RETRY_MAX)
        del validator


def _stop_thread(wake: threading.Event, stop: threading.Event) -> None:
    stop.set()
    wake.set()
