"""The bridge's TOML configuration (`--set bridge_config=FILE`), validated with pydantic.

Built-in providers `openai` and `anthropic` always exist; a `[providers.NAME]` table overrides
their fields or adds an OpenAI- or Anthropic-compatible provider. Relative paths are resolved
against the config file's directory so the proxy can be started from anywhere.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

PROVIDER_NAME = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
MAX_BODY_BYTES = 32 << 20

ProviderType = Literal["openai", "anthropic"]
CredentialMode = Literal["centralized", "byok", "auto"]


class ConfigError(Exception):
    """The configuration cannot be used; the message says what to fix."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ProviderConfig(_Strict):
    type: ProviderType | None = None
    enabled: bool = True
    hosts: list[str] | None = None
    upstream: str | None = None
    base_path: str | None = None
    passthrough: list[str] | None = None
    untouched: list[str] | None = None
    keys_env: str | None = None
    keys_file: Path | None = None
    credentials: CredentialMode | None = None
    send_actor_headers: bool = True
    strip_client_identity: bool = False  # session headers and metadata.user_id stay with us
    workspace_id: str | None = None

    @field_validator("hosts")
    @classmethod
    def _hosts(cls, hosts: list[str] | None) -> list[str] | None:
        if hosts is None:
            return None
        cleaned = [h.strip().lower().rstrip(".") for h in hosts]
        if not cleaned or any(not h or "/" in h or ":" in h for h in cleaned):
            raise ValueError("hosts must be non-empty bare host names (no scheme, port or path)")
        return cleaned

    @field_validator("upstream")
    @classmethod
    def _upstream(cls, upstream: str | None) -> str | None:
        if upstream is not None and not re.match(r"^https?://[^/\s]+", upstream):
            raise ValueError("upstream must be an http:// or https:// URL")
        return upstream

    @field_validator("base_path")
    @classmethod
    def _base_path(cls, base_path: str | None) -> str | None:
        if base_path is not None and not base_path.startswith("/"):
            raise ValueError("base_path must start with '/'")
        return base_path.rstrip("/") if base_path else base_path


# Always present unless `enabled = false`; a [providers.NAME] table overrides single fields.
BUILTIN_PROVIDERS: dict[str, ProviderConfig] = {
    "openai": ProviderConfig(type="openai", hosts=["api.openai.com"]),
    "anthropic": ProviderConfig(type="anthropic", hosts=["api.anthropic.com"]),
    # Codex signed in with ChatGPT: its Responses calls are bridged as BYOK; the rest of
    # chatgpt.com is forwarded untouched (decrypted only to be seen).
    "chatgpt": ProviderConfig(type="openai", hosts=["chatgpt.com"],
                              base_path="/backend-api/codex",
                              passthrough=["/backend-api/codex/"], untouched=["/"],
                              credentials="byok"),
}


class AuthConfig(_Strict):
    actors_file: Path | None = None
    allow_open_proxy: bool = False  # listen beyond loopback without an actors file

    def resolved_actors_file(self, base_dir: Path) -> Path | None:
        if self.actors_file is None:
            return None
        return self.actors_file if self.actors_file.is_absolute() else base_dir / self.actors_file


class RecordingConfig(_Strict):
    url: str | None = None  # sqlite:///path.db or postgresql://…; default: a SQLite file
    enabled: bool = True
    prompts: Literal["off", "truncated", "full"] = "truncated"
    prompt_limit: int = Field(default=2000, ge=1)  # characters kept in "truncated" mode
    spool_path: Path | None = None
    queue_size: int = Field(default=10_000, ge=1)
    batch_size: int = Field(default=500, ge=1)
    batch_interval: float = Field(default=0.2, gt=0)
    max_backoff: float = Field(default=5.0, gt=0)


class CircuitConfig(_Strict):
    enabled: bool = True
    failures: int = Field(default=5, ge=1)
    window: float = Field(default=10.0, gt=0)
    open_for: float = Field(default=30.0, gt=0)
    half_open_probes: int = Field(default=3, ge=1)


class ResilienceConfig(_Strict):
    key_strategy: Literal["priority", "round_robin"] = "priority"
    dead_key_retry: float = Field(default=600.0, gt=0)
    upstream_timeout: float = Field(default=600.0, gt=0)
    error_format: Literal["native", "openai"] = "native"
    circuit: CircuitConfig = CircuitConfig()


class EgressConfig(_Strict):
    # Internal networks clients may reach through the proxy (CIDRs); everything else that is
    # loopback, link-local or private is refused. Provider upstreams need no entry.
    allow: list[str] = Field(default_factory=list)

    @field_validator("allow")
    @classmethod
    def _networks(cls, values: list[str]) -> list[str]:
        import ipaddress

        for value in values:
            ipaddress.ip_network(value, strict=False)  # ValueError names the bad entry
        return values


class TelemetryConfig(_Strict):
    exporter: Literal["none", "console", "otlp"] = "none"
    otlp_endpoint: str | None = None  # base URL; OTEL_EXPORTER_OTLP_* env applies without it
    service_name: str = "aibridge"


class BridgeConfig(_Strict):
    providers: dict[str, ProviderConfig] = Field(default_factory=dict)
    auth: AuthConfig = AuthConfig()
    resilience: ResilienceConfig = ResilienceConfig()
    telemetry: TelemetryConfig = TelemetryConfig()
    egress: EgressConfig = EgressConfig()
    recording: RecordingConfig = RecordingConfig()
    max_body_bytes: int = Field(default=MAX_BODY_BYTES, gt=0)
    shutdown_grace: float = Field(default=20.0, ge=0)  # seconds in-flight requests get on exit

    @model_validator(mode="after")
    def _names(self) -> BridgeConfig:
        for name, provider in self.providers.items():
            if not PROVIDER_NAME.fullmatch(name):
                raise ValueError(f"provider name {name!r} must match {PROVIDER_NAME.pattern}")
            if provider.type is None and name not in BUILTIN_PROVIDERS:
                raise ValueError(f'provider {name!r} needs type = "openai" or "anthropic"')
        return self


def load_config(path: str | Path | None) -> tuple[BridgeConfig, Path]:
    """Read and validate the TOML file; returns the config and the directory paths resolve from."""
    if not path:
        return BridgeConfig(), Path.cwd()
    file = Path(path).expanduser().resolve()
    try:
        raw = tomllib.loads(file.read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(f"cannot read config {file}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config {file} is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config {file} is not valid TOML: {e}") from None
    try:
        return BridgeConfig.model_validate(raw), file.parent
    except ValidationError as e:
        raise ConfigError(f"config {file}: {_describe(e)}") from None


def _describe(error: ValidationError) -> str:
    parts = []
    for err in error.errors():
        where = ".".join(str(p) for p in err["loc"])
        parts.append(f"{where}: {err['msg']}" if where else err["msg"])
    return "; ".join(parts)
