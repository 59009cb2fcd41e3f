"""The provider registry: which hosts are decrypted, where their traffic goes, with which keys."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from aibridge.config import (
    BUILTIN_PROVIDERS,
    BridgeConfig,
    ConfigError,
    ProviderConfig,
    ResilienceConfig,
)
from aibridge.counters import Registry
from aibridge.keys.pool import KeyPool
from aibridge.providers.base import NO_PARAMS, ProviderApi, WireApi
from aibridge.providers.catalog import PROVIDER_APIS
from aibridge.providers.paths import PathError, normal_prefix, normalize, under

BRIDGED = "bridged"
PASSTHROUGH = "passthrough"  # forwarded with the credential and header handling
UNTOUCHED = "untouched"  # forwarded as the client sent it, only decrypted to be seen
UNKNOWN = "unknown"
DENIED = "denied"  # on the provider's deny list: refused whoever asks
INVALID = "invalid"  # a path without one safe reading (see providers.paths): refused


@dataclass(frozen=True)
class Upstream:
    scheme: str
    host: str
    port: int
    path: str  # base path prefix of the upstream URL, "" or "/something"

    @classmethod
    def parse(cls, url: str) -> Upstream:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"upstream {url!r} must be an http(s) URL with a host")
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError as e:  # a port that is not a number or out of range
            raise ConfigError(f"upstream {url!r}: {e}") from None
        return cls(parts.scheme, parts.hostname, port, parts.path.rstrip("/"))

    def __str__(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}{self.path}"


@dataclass(frozen=True)
class RouteMatch:
    kind: str  # BRIDGED, PASSTHROUGH, UNTOUCHED, UNKNOWN, DENIED or INVALID
    api: WireApi | None = None  # the wire format of a bridged route
    params: Mapping[str, str] = NO_PARAMS  # what the path says (e.g. a model)
    # The request target in normal form, sent upstream instead of the client's; None when the
    # client's target goes on as it is (untouched routes) or is refused anyway.
    target: str | None = field(default=None, compare=False)
    reason: str | None = field(default=None, compare=False)  # why DENIED or INVALID

    @property
    def route(self) -> str | None:
        """The route kind recorded for a bridged route ("chat", "messages", ...)."""
        return self.api.name if self.api is not None else None


# RouteMatch is immutable: the one outcome without a target of its own is shared.
_UNTOUCHED = RouteMatch(UNTOUCHED)


@dataclass(frozen=True)
class Provider:
    name: str
    api: ProviderApi
    hosts: tuple[str, ...]
    upstream: Upstream
    base_path: str
    passthrough: tuple[str, ...]  # prefixes in normal form (see providers.paths.under)
    untouched: tuple[str, ...]
    credentials: str  # centralized | byok | auto
    pool: KeyPool | None
    send_actor_headers: bool
    workspace_id: str | None
    strip_client_identity: bool = False
    deny: tuple[str, ...] = ()  # prefixes refused on this provider (403), whoever asks

    @property
    def type(self) -> str:
        return self.api.type

    def match(self, method: str, target: str) -> RouteMatch:
        """Classify a request target (path and query; the query is ignored) on this provider's
        host, on its normal form (providers.paths), which `RouteMatch.target` carries."""
        try:
            normal = normalize(target, self.base_path)
        except PathError as e:
            return RouteMatch(INVALID, reason=str(e))
        bare = normal.split("?", 1)[0]
        for prefix in self.deny:
            if under(bare, prefix):
                return RouteMatch(DENIED, target=normal, reason=prefix)
        if under(bare, self.base_path):
            bridged = self.api.bridged(method, bare[len(self.base_path):])
            if bridged is not None:
                return RouteMatch(BRIDGED, *bridged, target=normal)
        if any(under(bare, prefix) for prefix in self.passthrough):
            return RouteMatch(PASSTHROUGH, target=normal)
        if any(under(bare, prefix) for prefix in self.untouched):
            return _UNTOUCHED
        return RouteMatch(UNKNOWN, target=normal)

    def websocket_api(self, path: str) -> WireApi | None:
        """The wire format a WebSocket handshake on `path` (normal form) opens (Responses over
        WebSocket)."""
        bare = path.split("?", 1)[0]
        if not under(bare, self.base_path):
            return None
        return self.api.websocket_api(bare[len(self.base_path):])


@dataclass(frozen=True)
class ProviderRegistry:
    providers: tuple[Provider, ...]
    by_host: dict[str, Provider]

    def for_host(self, host: str | None) -> Provider | None:
        if not host:
            return None
        return self.by_host.get(host.lower().rstrip("."))


def provider_configs(config: BridgeConfig) -> dict[str, ProviderConfig]:
    """The built-in providers overlaid with the file's tables, enabled or not."""
    merged = dict(BUILTIN_PROVIDERS)
    for name, pc in config.providers.items():
        base = BUILTIN_PROVIDERS.get(name)
        merged[name] = base.model_copy(update=pc.model_dump(exclude_unset=True)) if base else pc
    return merged


def decrypted_hosts(config: BridgeConfig) -> list[str]:
    """Every host the bridge decrypts, without loading keys (for PAC files and docs)."""
    return [h for pc in provider_configs(config).values() if pc.enabled for h in pc.hosts or ()]


def build_registry(config: BridgeConfig, base_dir: Path,
                   environ: Mapping[str, str] | None = None,
                   counters: Registry | None = None) -> ProviderRegistry:
    env = os.environ if environ is None else environ
    counters = counters if counters is not None else Registry()
    merged = provider_configs(config)
    providers: list[Provider] = []
    by_host: dict[str, Provider] = {}
    for name, pc in merged.items():
        if not pc.enabled:
            continue
        provider = _build_provider(name, pc, base_dir, env, config.resilience, counters)
        for host in provider.hosts:
            if host in by_host:
                raise ConfigError(f"host {host!r} is claimed by providers "
                                  f"{by_host[host].name!r} and {name!r}")
            by_host[host] = provider
        providers.append(provider)
    return ProviderRegistry(tuple(providers), by_host)


def _build_provider(name: str, pc: ProviderConfig, base_dir: Path, env: Mapping[str, str],
                    resilience: ResilienceConfig, counters: Registry) -> Provider:
    api = PROVIDER_APIS[pc.type or name]
    hosts = tuple(pc.hosts or ())
    if not hosts:
        raise ConfigError(f"provider {name!r} needs hosts = [...]")
    upstream = Upstream.parse(pc.upstream or f"https://{hosts[0]}")
    base_path = pc.base_path if pc.base_path is not None else api.base_path
    if pc.passthrough is not None:
        passthrough = tuple(pc.passthrough)
    else:
        passthrough = tuple(base_path + p for p in api.passthrough) + api.extra_passthrough
    passthrough = _prefixes(name, "passthrough", passthrough)
    untouched = _prefixes(name, "untouched", pc.untouched or ())
    deny = _prefixes(name, "deny", pc.deny or ())
    keys = _load_keys(name, pc, base_dir, env)
    try:
        pool = KeyPool(name, keys, strategy=resilience.key_strategy,
                       dead_retry_after=resilience.dead_key_retry,
                       counters=counters) if keys else None
    except ValueError as e:  # duplicate keys
        raise ConfigError(str(e)) from None
    credentials = pc.credentials or ("centralized" if pool else "byok")
    if credentials == "centralized" and pool is None:
        raise ConfigError(f"provider {name!r}: credentials = \"centralized\" but no keys; set "
                          f"{_keys_env(name, pc)} (comma-separated) or keys_file")
    return Provider(name=name, api=api, hosts=hosts, upstream=upstream, base_path=base_path,
                    passthrough=passthrough, untouched=untouched, credentials=credentials,
                    pool=pool,
                    send_actor_headers=pc.send_actor_headers, workspace_id=pc.workspace_id,
                    strip_client_identity=pc.strip_client_identity, deny=deny)


def _prefixes(name: str, what: str, prefixes: Iterable[str]) -> tuple[str, ...]:
    """Configured path prefixes in the normal form requests are compared in."""
    normal = []
    for prefix in prefixes:
        try:
            normal.append(normal_prefix(prefix))
        except PathError as e:
            raise ConfigError(f"provider {name!r}: {what} entry {prefix!r}: {e}") from None
    return tuple(normal)


def _keys_env(name: str, pc: ProviderConfig) -> str:
    return pc.keys_env or f"AIBRIDGE_{name.upper().replace('-', '_')}_KEYS"


def _load_keys(name: str, pc: ProviderConfig, base_dir: Path,
               env: Mapping[str, str]) -> list[str]:
    """Keys only ever come from the environment or a file, never from mitmproxy options."""
    keys = [k.strip() for k in env.get(_keys_env(name, pc), "").split(",") if k.strip()]
    if pc.keys_file:
        path = pc.keys_file if pc.keys_file.is_absolute() else base_dir / pc.keys_file
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError as e:
            raise ConfigError(f"provider {name!r}: cannot read keys_file {path}: {e.strerror}") \
                from None
        except UnicodeDecodeError:
            raise ConfigError(f"provider {name!r}: keys_file {path} is not UTF-8 text") from None
        keys += [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
    return keys
