"""Everything the hooks need, built once from the config file and the environment."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

from aibridge.access.actors import ActorDirectory, load_actors, local_user_actor
from aibridge.access.oidc import OidcValidator
from aibridge.config import BridgeConfig, load_config
from aibridge.counters import Registry
from aibridge.intercept import Actor
from aibridge.keys.circuit import BreakerSettings, CircuitBreakers
from aibridge.pricing import PriceBook
from aibridge.providers import ProviderRegistry, build_registry
from aibridge.secrets.build import SecretsSetup, build_secrets
from aibridge.state.memory import MemoryState
from aibridge.state.redis_shared import Shared
from aibridge.state.store import StateStore


@dataclass(frozen=True)
class Settings:
    config: BridgeConfig
    config_path: str | None
    base_dir: Path  # relative paths in the config resolve from here
    registry: ProviderRegistry
    actors: ActorDirectory
    local_actor: Actor
    breakers: CircuitBreakers | None
    prices: PriceBook  # [prices] over genai-prices; rebuilt on reload, so changes apply
    # Budget spend, rate-limit windows, concurrency slots: carried over by a reload, so spend
    # and windows survive it (the policies' keys name what they count; a changed one starts
    # anew). In the process; a shared store would make it hold across processes.
    state: StateStore = field(default_factory=MemoryState)
    # `[state] url`: the link to the other bridge processes (keys, circuits, logins, and the
    # `state` above); kept across reloads while `[state]` stays the same.
    shared: Shared | None = None
    # `[secrets]`: the scanner (None when scanning is off); kept across reloads while the
    # section stays the same, with the text blocks it remembers.
    secrets: SecretsSetup | None = None

    @classmethod
    def load(cls, config_path: str | None, counters: Registry | None = None,
             previous: Settings | None = None) -> Settings:
        """Raises `ConfigError` with a message fit for the start-up log.

        With `previous` (a hot reload), key pools whose keys did not change and the circuit
        breakers carry over, so a reload does not forget which keys are cooling or dead.
        """
        counters = counters if counters is not None else Registry()
        config, base_dir = load_config(config_path)
        config.mcp.check_environment(os.environ)  # MCP header secrets come from it
        circuit = config.resilience.circuit
        registry = build_registry(config, base_dir, counters=counters)
        if previous is not None:
            registry = _carry_pools(registry, previous.registry)
        breakers = None
        if circuit.enabled:
            breakers = CircuitBreakers(BreakerSettings(
                failure_threshold=circuit.failures, window=circuit.window,
                open_for=circuit.open_for, half_open_probes=circuit.half_open_probes),
                counters=counters)
            if previous is not None and previous.breakers is not None \
                    and previous.config.resilience.circuit == circuit:
                breakers = previous.breakers
        shared = _shared(config, registry, breakers, previous)
        return cls(
            config=config,
            config_path=config_path,
            base_dir=base_dir,
            registry=registry,
            # A reload may find the actors file gone: by default that is a rejected reload
            # (the current actors stay); `on_missing = "deny"` refuses everyone instead.
            actors=_with_oidc(load_actors(config.auth.resolved_actors_file(base_dir),
                                          deny_if_missing=previous is not None
                                          and config.auth.on_missing == "deny"),
                              config, base_dir, previous),
            local_actor=local_user_actor(),
            breakers=breakers,
            prices=PriceBook.from_config(config.prices, registry.providers),
            state=shared.store if shared is not None else
            previous.state if previous is not None and previous.shared is None else MemoryState(),
            shared=shared,
            secrets=build_secrets(config.secrets,
                                  previous=previous.secrets if previous is not None else None),
        )

    def watched_files(self) -> list[Path]:
        """The files whose change triggers a reload: config, actors, keys files."""
        files = [Path(self.config_path).expanduser().resolve()] if self.config_path else []
        if self.actors.source is not None:
            files.append(self.actors.source)
        for pc in self.config.providers.values():
            if pc.keys_file is not None:
                files.append(pc.keys_file if pc.keys_file.is_absolute()
                             else self.base_dir / pc.keys_file)
        return files

    def warnings(self) -> list[str]:
        """Start-up lines worth a warning: a set-up that starts but is probably not meant."""
        return [f"provider {p.name}: credentials = \"auto\" but no central keys, so every "
                "request must carry the user's own provider key; a client sending its proxy "
                "token as the key gets 401 (give it keys, or set credentials = \"byok\")"
                for p in self.registry.providers
                if p.credentials == "auto" and not p.pool and p.signer is None]

    def describe(self) -> list[str]:
        """Start-up lines: what is decrypted, with how many keys (never keys), who may connect."""
        lines = []
        for p in self.registry.providers:
            keys = f"{len(p.pool)} central key(s)" if p.pool else "no central keys"
            if p.signer is not None:  # never the secret: the access key id, masked
                keys = f"signs with AWS credentials ({p.signer.source}, {p.signer.hint})"
            # Without `upstream`, a provider of several hosts (or a wildcard) sends each
            # request to the host it was decrypted for.
            upstream = ("the requested host, port 443"
                        if p.follows_host and (len(p.hosts) > 1 or "*" in p.hosts[0])
                        else p.upstream)
            lines.append(f"provider {p.name} ({p.type}): decrypts {', '.join(p.hosts)}; upstream "
                         f"{upstream}; credentials={p.credentials}; {keys}; "
                         f"actor headers {'on' if p.send_actor_headers else 'off'}")
        if self.actors.missing:
            lines.append(f"actors file {self.actors.source} is missing: every proxy request is "
                         'refused ([auth] on_missing = "deny")')
        elif self.actors.source is not None:
            lines.append(f"proxy authentication on: {len(self.actors.by_digest)} actor(s) from "
                         f"{self.actors.source}")
        if (oidc := self.actors.oidc) is not None:
            lines.append(f"proxy authentication by sign-in tokens of {oidc.config.issuer} "
                         f"(OIDC, audience {oidc.config.audience}): {oidc.key_count} signing "
                         f"key(s) from {oidc.config.jwks_url}")
        elif not self.actors.requires_auth:
            lines.append("no actors file: proxy authentication is off and every request is "
                         f"attributed to the local user {self.local_actor.id!r}")
        if self.config.budgets or self.config.limits:
            lines.append(f"{len(self.config.budgets)} budget(s), {len(self.config.limits)} "
                         "rate limit(s)")
        lines.append(self.prices.describe())
        lines.append(self.secrets.describe() if self.secrets is not None
                     else "secret scanning off")
        lines.append("every other host is tunnelled without decryption")
        return lines


def _with_oidc(actors: ActorDirectory, config: BridgeConfig, base_dir: Path,
               previous: Settings | None) -> ActorDirectory:
    """The directory with `[auth.oidc]`'s validator: the previous one when its set-up did not
    change (its keys and accepted tokens carry over), else a new one, which at start fetches
    the keys at once and on a reload starts with the previous keys of the same URL."""
    oidc = config.auth.oidc
    if oidc is None:
        return actors
    before = previous.actors.oidc if previous is not None else None
    if before is not None and before.config == oidc and previous is not None \
            and previous.base_dir == base_dir:
        return dataclasses.replace(actors, oidc=before)
    return dataclasses.replace(actors, oidc=OidcValidator(
        oidc, base_dir, fetch=before is None or before.config.jwks_url != oidc.jwks_url,
        keys_from=before))


def _shared(config: BridgeConfig, registry: ProviderRegistry,
            breakers: CircuitBreakers | None, previous: Settings | None) -> Shared | None:
    """The link to the other processes for `[state] url` (the previous one if `[state]` did
    not change; a replaced one is closed by the runtime once the new settings apply), with
    these settings' key pools and breakers attached."""
    wanted = config.state
    if wanted.url is None:
        return None
    key = (wanted.url, wanted.timeout, wanted.retry_interval, wanted.prefix)
    before = previous.shared if previous is not None else None
    shared = before if before is not None and before.settings == key else None
    pools = [p.pool for p in registry.providers if p.pool is not None]
    fresh = [pool for pool in pools if pool.shared is None]
    if shared is None:
        shared = Shared(wanted.url, timeout=wanted.timeout,
                        retry_interval=wanted.retry_interval, prefix=wanted.prefix)
    for pool in pools:
        pool.shared = shared.sharing
    if breakers is not None:
        breakers.shared = shared.sharing
    shared.sharing.track(pools, breakers)
    if shared is before:
        shared.sharing.adopt(fresh)
    else:
        shared.start()  # connects (bounded by the timeout) and takes the shared state
    return shared


def _carry_pools(registry: ProviderRegistry, old: ProviderRegistry) -> ProviderRegistry:
    before = {p.name: p.pool for p in old.providers if p.pool is not None}
    providers = []
    for p in registry.providers:
        pool = before.get(p.name)
        if p.pool is not None and pool is not None and pool.keys == p.pool.keys \
                and pool.strategy == p.pool.strategy \
                and pool.dead_retry_after == p.pool.dead_retry_after:
            p = dataclasses.replace(p, pool=pool)
        providers.append(p)
    by_host = {h: p for p in providers for h in p.hosts}
    return ProviderRegistry(tuple(providers), by_host)
