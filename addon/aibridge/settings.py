"""Everything the hooks need, built once from the config file and the environment."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from aibridge.access.actors import ActorDirectory, load_actors, local_user_actor
from aibridge.config import BridgeConfig, load_config
from aibridge.counters import Registry
from aibridge.intercept import Actor
from aibridge.keys.circuit import BreakerSettings, CircuitBreakers
from aibridge.providers import ProviderRegistry, build_registry


@dataclass(frozen=True)
class Settings:
    config: BridgeConfig
    config_path: str | None
    base_dir: Path  # relative paths in the config resolve from here
    registry: ProviderRegistry
    actors: ActorDirectory
    local_actor: Actor
    breakers: CircuitBreakers | None

    @classmethod
    def load(cls, config_path: str | None, counters: Registry | None = None,
             previous: Settings | None = None) -> Settings:
        """Raises `ConfigError` with a message fit for the start-up log.

        With `previous` (a hot reload), key pools whose keys did not change and the circuit
        breakers carry over, so a reload does not forget which keys are cooling or dead.
        """
        counters = counters if counters is not None else Registry()
        config, base_dir = load_config(config_path)
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
        return cls(
            config=config,
            config_path=config_path,
            base_dir=base_dir,
            registry=registry,
            actors=load_actors(config.auth.resolved_actors_file(base_dir)),
            local_actor=local_user_actor(),
            breakers=breakers,
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
                for p in self.registry.providers if p.credentials == "auto" and not p.pool]

    def describe(self) -> list[str]:
        """Start-up lines: what is decrypted, with how many keys (never keys), who may connect."""
        lines = []
        for p in self.registry.providers:
            keys = f"{len(p.pool)} central key(s)" if p.pool else "no central keys"
            lines.append(f"provider {p.name} ({p.type}): decrypts {', '.join(p.hosts)}; upstream "
                         f"{p.upstream}; credentials={p.credentials}; {keys}; "
                         f"actor headers {'on' if p.send_actor_headers else 'off'}")
        if self.actors.requires_auth:
            lines.append(f"proxy authentication on: {len(self.actors.by_digest)} actor(s) from "
                         f"{self.actors.source}")
        else:
            lines.append("no actors file: proxy authentication is off and every request is "
                         f"attributed to the local user {self.local_actor.id!r}")
        lines.append("every other host is tunnelled without decryption")
        return lines


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
