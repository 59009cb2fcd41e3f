"""Everything the hooks need, built once from the config file and the environment."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from aibridge.actors import ActorDirectory, load_actors, local_user_actor
from aibridge.circuit import BreakerSettings, CircuitBreakers
from aibridge.config import BridgeConfig, load_config
from aibridge.counters import Registry
from aibridge.intercept import Actor
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
    def load(cls, config_path: str | None, counters: Registry | None = None) -> Settings:
        """Raises `ConfigError` with a message fit for the start-up log."""
        counters = counters if counters is not None else Registry()
        config, base_dir = load_config(config_path)
        circuit = config.resilience.circuit
        actors_file = config.auth.actors_file
        if actors_file is not None and not actors_file.is_absolute():
            actors_file = base_dir / actors_file
        return cls(
            config=config,
            config_path=config_path,
            base_dir=base_dir,
            registry=build_registry(config, base_dir, counters=counters),
            actors=load_actors(Path(actors_file) if actors_file else None),
            local_actor=local_user_actor(),
            breakers=CircuitBreakers(BreakerSettings(
                failure_threshold=circuit.failures, window=circuit.window,
                open_for=circuit.open_for, half_open_probes=circuit.half_open_probes),
                counters=counters) if circuit.enabled else None,
        )

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
