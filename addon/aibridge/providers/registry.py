"""The provider registry: which hosts are decrypted, where their traffic goes, with which keys."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from urllib.parse import urlsplit

from aibridge.config import (
    BUILTIN_PROVIDERS,
    BridgeConfig,
    ConfigError,
    ProviderConfig,
    ResilienceConfig,
)
from aibridge.counters import Registry
from aibridge.keys.aws import AwsCredentials, AwsCredentialsError
from aibridge.keys.aws import from_chain as aws_credentials
from aibridge.keys.pool import KeyPool
from aibridge.providers.base import NO_PARAMS, ProviderApi, RequestInfo, WireApi
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


ROUTE_CACHE_SIZE = 1024


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
    # Central AWS credentials that sign requests (Bedrock, `api.signs`), when there are no
    # central keys; `region` signs requests whose upstream host names none.
    signer: AwsCredentials | None = field(default=None, compare=False)
    region: str | None = None
    # No `upstream` configured: each request goes to the host it was decrypted for.
    follows_host: bool = False
    # A name clients use where the model goes (an Azure deployment) -> the model it serves.
    deployments: Mapping[str, str] = NO_PARAMS
    # (method, target) -> its RouteMatch: clients send the same few targets over and over, and
    # classifying one (normal form, deny list, routes) is a dozen microseconds per request.
    _routes: dict[tuple[str, str], RouteMatch] = field(
        default_factory=dict, init=False, repr=False, compare=False, hash=False)

    @property
    def type(self) -> str:
        return self.api.type

    @property
    def prices_id(self) -> str | None:
        """The genai-prices provider to price with when no host names one (pricing)."""
        return self.api.prices_id

    def upstream_for(self, host: str | None) -> Upstream:
        """Where a request decrypted for `host` (its TLS SNI) goes: the configured upstream,
        or else that host itself on the HTTPS port (a regional or wildcard host keeps its own).
        The host must be one of this provider's (the registry found the provider by it)."""
        if not self.follows_host or not host:
            return self.upstream
        host = host.lower().rstrip(".")
        if host == self.upstream.host:
            return self.upstream
        return Upstream("https", host, 443, "")

    def request_info(self, api: WireApi, body: object,
                     params: Mapping[str, str] = NO_PARAMS) -> RequestInfo:
        """`api.request_info`, with a deployment name read as the model it serves."""
        info = api.request_info(body, params)
        model = self.deployments.get(info.model) if self.deployments else None
        return dataclasses.replace(info, model=model) if model else info

    def match(self, method: str, target: str) -> RouteMatch:
        """Classify a request target (path and query; the query is ignored) on this provider's
        host, on its normal form (providers.paths), which `RouteMatch.target` carries."""
        key = (method, target)
        found = self._routes.get(key)
        if found is None:
            found = self._match(method, target)
            if len(self._routes) >= ROUTE_CACHE_SIZE:
                self._routes.clear()  # e.g. queries that differ in every request
            if len(target) <= 2048:
                self._routes[key] = found
        return found

    def _match(self, method: str, target: str) -> RouteMatch:
        try:
            normal = normalize(target, self.base_path, slash_escapes=self.api.slash_escapes)
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
    """Providers by host. `by_host` keys are names or wildcard patterns (`*` = one label)."""

    providers: tuple[Provider, ...]
    by_host: dict[str, Provider]
    # Label count -> (pattern labels, provider), most specific first; from `by_host`.
    _wildcards: dict[int, list[tuple[tuple[str, ...], Provider]]] = field(
        init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        table: dict[int, list[tuple[tuple[str, ...], Provider]]] = {}
        for pattern, provider in self.by_host.items():
            if "*" in pattern:
                labels = tuple(pattern.split("."))
                table.setdefault(len(labels), []).append((labels, provider))
        for entries in table.values():
            entries.sort(key=lambda entry: entry[0].count("*"))
        object.__setattr__(self, "_wildcards", table)

    def for_host(self, host: str | None) -> Provider | None:
        """The provider that decrypts `host`: by its exact name, else the most specific
        wildcard pattern it matches."""
        if not host:
            return None
        host = host.lower().rstrip(".")
        provider = self.by_host.get(host)
        if provider is not None or not self._wildcards:
            return provider
        labels = host.split(".")
        for pattern, candidate in self._wildcards.get(len(labels), ()):
            if _matches(pattern, labels):
                return candidate
        return None


def _matches(pattern: tuple[str, ...], labels: list[str]) -> bool:
    return all(p == label or (p == "*" and label) for p, label in zip(pattern, labels,
                                                                       strict=True))


def _overlap(a: str, b: str) -> bool:
    """Whether two host patterns can match one host name."""
    la, lb = a.split("."), b.split(".")
    return len(la) == len(lb) and all(x == y or "*" in (x, y) for x, y in zip(la, lb,
                                                                               strict=True))


def provider_configs(config: BridgeConfig) -> dict[str, ProviderConfig]:
    """The built-in providers overlaid with the file's tables, enabled or not. A `type` the
    catalog does not know is a ConfigError."""
    merged = dict(BUILTIN_PROVIDERS)
    for name, pc in config.providers.items():
        base = BUILTIN_PROVIDERS.get(name)
        merged[name] = base.model_copy(update=pc.model_dump(exclude_unset=True)) if base else pc
    for name, pc in merged.items():
        if (pc.type or name) not in PROVIDER_APIS:
            raise ConfigError(f"provider {name!r}: unknown type {pc.type or name!r} (known: "
                              f"{', '.join(sorted(PROVIDER_APIS))})")
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
            # Two providers' wildcards must not share a host (which would win is arbitrary);
            # an exact name inside another provider's wildcard is an override, and wins.
            if "*" in host and (other := next((o for o, p in by_host.items() if "*" in o
                                               and p.name != name and _overlap(o, host)), None)):
                raise ConfigError(f"hosts {other!r} (provider {by_host[other].name!r}) and "
                                  f"{host!r} (provider {name!r}) can match the same host")
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
    if api.byok_only and (keys or pc.credentials not in (None, "byok")):
        raise ConfigError(f"provider {name!r} ({api.type}) takes only its users' own "
                          "credentials: no keys, and credentials = \"byok\"")
    try:
        pool = KeyPool(name, keys, strategy=resilience.key_strategy,
                       dead_retry_after=resilience.dead_key_retry,
                       counters=counters) if keys else None
    except ValueError as e:  # duplicate keys
        raise ConfigError(str(e)) from None
    signer = _aws_signer(name, pc, api, env) if pool is None else None
    credentials = pc.credentials or ("centralized" if pool or signer else "byok")
    if credentials == "centralized" and pool is None and signer is None:
        aws = " or AWS credentials (environment, aws_profile)" if api.signs else ""
        raise ConfigError(f"provider {name!r}: credentials = \"centralized\" but no keys; set "
                          f"{_keys_env(name, pc)} (comma-separated) or keys_file{aws}")
    return Provider(name=name, api=api, hosts=hosts, upstream=upstream, base_path=base_path,
                    passthrough=passthrough, untouched=untouched, credentials=credentials,
                    pool=pool,
                    send_actor_headers=pc.send_actor_headers, workspace_id=pc.workspace_id,
                    strip_client_identity=pc.strip_client_identity, deny=deny,
                    signer=signer, region=pc.region, follows_host=pc.upstream is None,
                    deployments=MappingProxyType(dict(pc.deployments or {})))


def _aws_signer(name: str, pc: ProviderConfig, api: ProviderApi,
                env: Mapping[str, str]) -> AwsCredentials | None:
    """The AWS credentials that sign a provider's requests: for APIs that take them, unless
    the provider only forwards its callers' own credentials."""
    if api.signs is None or pc.credentials == "byok":
        return None
    try:
        return aws_credentials(profile=pc.aws_profile, role_arn=pc.role_arn, region=pc.region,
                               environ=env)
    except AwsCredentialsError as e:
        raise ConfigError(f"provider {name!r}: {e}") from None


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
