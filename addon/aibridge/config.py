"""The bridge's TOML configuration (`--set bridge_config=FILE`), validated with pydantic.

Built-in providers (`BUILTIN_PROVIDERS`: openai, anthropic, gemini, ...) always exist, some
disabled until enabled; a `[providers.NAME]` table overrides their fields or adds a provider of
any type the catalog knows (an OpenAI- or Anthropic-compatible one, most often). Relative
paths are resolved against the config file's directory so the proxy can be started from
anywhere.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

PROVIDER_NAME = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
HEADER_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # metadata keys travel in headers
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
MAX_BODY_BYTES = 32 << 20
MAX_PASSTHROUGH_BODY_BYTES = 100 << 20  # file uploads and batches, streamed rather than held

# A provider API's `type`: providers.catalog names them, and the registry refuses an unknown one
# (a new provider API is a module and a catalog line, nothing here).
PROVIDER_TYPE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
# A host name, or a pattern where `*` stands for exactly one whole label (`*.openai.azure.com`).
_HOST_LABEL = re.compile(r"^(\*|[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)$")
CredentialMode = Literal["centralized", "byok", "auto"]


class ConfigError(Exception):
    """The configuration cannot be used; the message says what to fix."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ProviderConfig(_Strict):
    type: str | None = None
    enabled: bool = True
    hosts: list[str] | None = None
    upstream: str | None = None
    base_path: str | None = None
    passthrough: list[str] | None = None  # replaces the default prefixes: narrows them
    untouched: list[str] | None = None
    deny: list[str] | None = None  # path prefixes refused with 403, bridged routes included
    keys_env: str | None = None
    keys_file: Path | None = None
    credentials: CredentialMode | None = None
    send_actor_headers: bool = True
    strip_client_identity: bool = False  # session headers and metadata.user_id stay with us
    workspace_id: str | None = None
    # Amazon Bedrock (type "bedrock"): the AWS credentials that sign requests come from the
    # standard chain (environment, shared config `aws_profile`), assuming `role_arn` if given;
    # `region` signs requests whose host names none (e.g. an `upstream` of a VPC endpoint).
    aws_profile: str | None = None
    role_arn: str | None = Field(default=None, pattern=r"^arn:aws[a-z-]*:iam::\d{12}:role/.+")
    region: str | None = Field(default=None, pattern=r"^[a-z]{2}(-[a-z]+)+-\d$")
    # Names clients put where the model goes -> the model they serve (Azure OpenAI deployments):
    # records, prices, budgets and limits see the model.
    deployments: dict[str, str] | None = None

    @field_validator("type")
    @classmethod
    def _type(cls, value: str | None) -> str | None:
        if value is not None and not PROVIDER_TYPE.fullmatch(value):
            raise ValueError(f"type {value!r} is not a provider type name")
        return value

    @field_validator("deployments")
    @classmethod
    def _deployments(cls, deployments: dict[str, str] | None) -> dict[str, str] | None:
        if deployments is not None and any(
                not name.strip() or not model.strip() for name, model in deployments.items()):
            raise ValueError("deployments map non-empty names to non-empty model names")
        return deployments

    @field_validator("hosts")
    @classmethod
    def _hosts(cls, hosts: list[str] | None) -> list[str] | None:
        if hosts is None:
            return None
        cleaned = [h.strip().lower().rstrip(".") for h in hosts]
        if not cleaned or any(not h or "/" in h or ":" in h for h in cleaned):
            raise ValueError("hosts must be non-empty bare host names (no scheme, port or path)")
        for host in cleaned:
            labels = host.split(".")
            if not all(_HOST_LABEL.fullmatch(label) for label in labels):
                raise ValueError(f"host {host!r}: labels are letters, digits and '-', or a "
                                 "whole '*' standing for one label")
            if "*" in labels[-2:]:
                raise ValueError(f"host {host!r}: a wildcard must leave the last two labels "
                                 "(the domain) literal")
        return cleaned

    @field_validator("passthrough", "untouched", "deny")
    @classmethod
    def _prefixes(cls, prefixes: list[str] | None) -> list[str] | None:
        if prefixes is not None and any(not p.startswith("/") for p in prefixes):
            raise ValueError("path prefixes must start with '/'")
        return prefixes

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
    "gemini": ProviderConfig(type="gemini", hosts=["generativelanguage.googleapis.com"]),
    # Opt-in (`enabled = true`): decrypting these by default would change what every Azure
    # client and IDE of the company sees.
    "azure": ProviderConfig(type="azure", enabled=False,
                            hosts=["*.openai.azure.com", "*.cognitiveservices.azure.com"]),
    "copilot": ProviderConfig(type="copilot", enabled=False, credentials="byok",
                              hosts=["api.githubcopilot.com", "api.individual.githubcopilot.com",
                                     "api.business.githubcopilot.com",
                                     "api.enterprise.githubcopilot.com"]),
}


class OidcConfig(_Strict):
    """`[auth.oidc]`: a proxy password that is a JWT signed by the issuer's keys is an actor
    (access/oidc.py): its id from `id_claim`, metadata keys from the claims they name."""

    issuer: str = Field(min_length=1)
    audience: str | list[str]
    jwks_url: str
    id_claim: str = Field(default="email", min_length=1)
    metadata_claims: dict[str, str] = Field(default_factory=dict)  # metadata key -> claim
    algorithms: list[Literal["RS256", "RS384", "RS512", "PS256", "ES256", "ES384"]] = Field(
        default_factory=lambda: ["RS256", "ES256"], min_length=1)
    ca_file: Path | None = None  # trust for jwks_url beyond the system's (a private CA)
    leeway: float = Field(default=30.0, ge=0)  # seconds of clock skew on exp / nbf / iat
    refresh_interval: float = Field(default=900.0, gt=0)  # seconds between key refreshes
    fetch_timeout: float = Field(default=5.0, gt=0)

    @field_validator("jwks_url")
    @classmethod
    def _jwks_url(cls, url: str) -> str:
        if not re.match(r"^https?://[^/\s]+", url):
            raise ValueError("jwks_url must be an https:// URL")
        return url

    @field_validator("metadata_claims")
    @classmethod
    def _metadata_keys(cls, claims: dict[str, str]) -> dict[str, str]:
        for key in claims:
            if not HEADER_TOKEN.fullmatch(key):
                raise ValueError(f"metadata key {key!r} must be an HTTP header token")
        return claims

    def resolved_ca_file(self, base_dir: Path) -> Path | None:
        if self.ca_file is None:
            return None
        return self.ca_file if self.ca_file.is_absolute() else base_dir / self.ca_file


class AuthConfig(_Strict):
    actors_file: Path | None = None
    oidc: OidcConfig | None = None  # proxy passwords that are the company's sign-in tokens
    allow_open_proxy: bool = False  # listen beyond loopback without an actors file
    # A reload that finds the actors file gone: keep the current actors, or refuse everyone.
    on_missing: Literal["keep", "deny"] = "keep"
    # Failed proxy logins, counted over a sliding window (see access/failure_limit.py): per
    # (client address, user name), per address across names, and for the whole proxy.
    failure_window: float = Field(default=60.0, gt=0)
    max_failures_per_user: int = Field(default=10, ge=1)
    max_failures_per_address: int = Field(default=100, ge=1)
    max_failures_global: int = Field(default=1000, ge=1)
    known_login_ttl: float = Field(default=86_400.0, ge=0)  # a success keeps a pair "known"
    # Client connections: seconds to complete a first request or CONNECT that passes proxy
    # auth, seconds an authenticated connection may sit idle, open connections per address.
    login_timeout: float = Field(default=15.0, gt=0)
    idle_timeout: float = Field(default=300.0, gt=0)
    max_connections_per_address: int = Field(default=256, ge=1)

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
    # Seconds the bridge keeps retrying an upstream that refused a connection (0: never)
    connect_retry_window: float = Field(default=10.0, ge=0, le=120)
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


class PriceConfig(_Strict):
    """`[prices."model-glob"]`: USD per million tokens for models the operator prices (a model
    genai-prices lacks, or a negotiated rate). Cache rates default to the input rate."""

    input: Decimal = Field(ge=0, allow_inf_nan=False)
    output: Decimal = Field(ge=0, allow_inf_nan=False)
    cache_read: Decimal | None = Field(default=None, ge=0, allow_inf_nan=False)
    cache_write: Decimal | None = Field(default=None, ge=0, allow_inf_nan=False)


class MatchConfig(_Strict):
    """Whom a budget or limit applies to. Every field given must match; none given: everyone.
    `team` is the actor metadata key `[budgets_settings] team_key` names. A metadata value with
    commas (an OIDC group list) matches any one of its items."""

    actor: str | None = None
    team: str | None = None
    metadata: dict[str, str | int | float | bool] = Field(default_factory=dict)

    @field_validator("metadata")
    @classmethod
    def _values(cls, metadata: dict[str, object]) -> dict[str, object]:
        # As the actors file stores them: booleans lower case, everything a string.
        return {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in metadata.items()}


class _Scoped(_Strict):
    name: str = Field(min_length=1, max_length=200)
    match: MatchConfig = MatchConfig()
    provider: str | None = Field(default=None, min_length=1)  # glob on the provider name
    model: str | None = Field(default=None, min_length=1)  # glob on the model, any case


class BudgetConfig(_Scoped):
    """`[[budgets]]`: spend (the recorded cost) of the matching requests per UTC calendar
    period; a spent budget refuses further requests until the period ends."""

    period: Literal["day", "week", "month"] = "month"
    limit_usd: Decimal = Field(gt=0, allow_inf_nan=False)
    warn_at: list[float] = Field(default_factory=list)  # shares of limit_usd, e.g. [0.8, 0.95]

    @field_validator("warn_at")
    @classmethod
    def _shares(cls, shares: list[float]) -> list[float]:
        if any(not 0 < share < 1 for share in shares):
            raise ValueError("warn_at shares must be between 0 and 1 (exclusive)")
        return sorted(set(shares))


class BudgetsSettings(_Strict):
    team_key: str = Field(default="Team", min_length=1)  # actor metadata key of `match.team`
    webhook_url: str | None = None  # POSTed a JSON notice when a budget crosses warn_at
    webhook_timeout: float = Field(default=5.0, gt=0)
    webhook_attempts: int = Field(default=5, ge=1)
    # A model without a price (see [prices]) under a budget: let it through uncharged, or
    # refuse it (403 budget_unpriced_model).
    unpriced: Literal["allow", "refuse"] = "allow"
    # The output a reservation assumes when a request names no max_tokens.
    default_output_tokens: int = Field(default=4096, ge=1)

    @field_validator("webhook_url")
    @classmethod
    def _webhook(cls, url: str | None) -> str | None:
        if url is not None and not re.match(r"^https?://[^/\s]+", url):
            raise ValueError("webhook_url must be an http:// or https:// URL")
        return url


class LimitConfig(_Scoped):
    """`[[limits]]`: requests per minute, tokens per minute (input + output, charged when a
    request ends) and requests in flight, over sliding windows."""

    rpm: int | None = Field(default=None, ge=1)
    tpm: int | None = Field(default=None, ge=1)
    concurrent: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _some(self) -> LimitConfig:
        if self.rpm is None and self.tpm is None and self.concurrent is None:
            raise ValueError(f"limit {self.name!r} needs rpm, tpm or concurrent")
        return self


class StateConfig(_Strict):
    """`[state]`: state several bridge processes share (key states, circuit breakers, failed
    logins, budgets and rate limits) in Redis >= 7 or Valkey (state/redis.py). Without a URL
    each process keeps its own."""

    url: str | None = None  # redis://[:password@]host:6379/0, rediss://… for TLS
    timeout: float = Field(default=0.05, gt=0, le=5)  # seconds per call; then local state
    retry_interval: float = Field(default=1.0, gt=0, le=60)  # seconds between reconnects
    prefix: str = Field(default="aibridge", pattern=r"^[A-Za-z0-9_.:-]{1,64}$")

    @field_validator("url")
    @classmethod
    def _url(cls, url: str | None) -> str | None:
        if url is not None and not re.match(r"^(rediss?|unix)://", url):
            raise ValueError("url must be a redis://, rediss:// or unix:// URL")
        return url


class McpServerConfig(_Strict):
    """`[mcp.servers.NAME]`: an MCP server (Streamable HTTP) whose tools the bridge offers to
    the models of the requests `match` selects, as `bmcp_<NAME>_<tool>`, and runs itself."""

    url: str
    # Header name -> the environment variable holding its value (secrets never sit in the file).
    headers_env: dict[str, str] = Field(default_factory=dict)
    allow: list[str] = Field(default_factory=list)  # regexes a tool name must match in full
    deny: list[str] = Field(default_factory=list)  # regexes that hide a tool; deny wins
    match: MatchConfig = MatchConfig()  # who gets the tools (actor, team, metadata)
    enabled: bool = True
    call_timeout: float = Field(default=30.0, gt=0, le=600)  # seconds per tool call
    max_result_bytes: int = Field(default=64 * 1024, ge=256, le=8 << 20)  # of one tool result

    @field_validator("url")
    @classmethod
    def _url(cls, url: str) -> str:
        if not re.match(r"^https?://[^/\s]+", url):
            raise ValueError("url must be an http:// or https:// URL")
        if "@" in url.split("/", 3)[2]:
            raise ValueError("url must not carry credentials (log lines show it): use headers_env")
        return url

    @field_validator("headers_env")
    @classmethod
    def _headers(cls, headers: dict[str, str]) -> dict[str, str]:
        for name, variable in headers.items():
            if not HEADER_TOKEN.fullmatch(name):
                raise ValueError(f"header name {name!r} is not an HTTP header token")
            if not ENV_NAME.fullmatch(variable):
                raise ValueError(f"{variable!r} is not an environment variable name")
        return headers

    @field_validator("allow", "deny")
    @classmethod
    def _patterns(cls, patterns: list[str]) -> list[str]:
        for pattern in patterns:
            try:
                re.compile(pattern)
            except re.error as e:
                raise ValueError(f"{pattern!r} is not a regular expression: {e}") from None
        return patterns


class McpConfig(_Strict):
    """`[mcp]`: company MCP servers whose tools every matching request gets (mcp/)."""

    servers: dict[str, McpServerConfig] = Field(default_factory=dict)
    refresh_interval: float = Field(default=300.0, gt=0)  # seconds between tool-list refetches
    connect_timeout: float = Field(default=10.0, gt=0, le=120)
    # Follow-up requests the bridge sends for one client request after running tools.
    max_rounds: int = Field(default=5, ge=1, le=50)

    @field_validator("servers")
    @classmethod
    def _names(cls, servers: dict[str, McpServerConfig]) -> dict[str, McpServerConfig]:
        for name in servers:
            # No "_": the injected name bmcp_<server>_<tool> must say which server it is.
            if not PROVIDER_NAME.fullmatch(name) or len(name) > 24:
                raise ValueError(f"mcp server name {name!r} must match {PROVIDER_NAME.pattern} "
                                 "(at most 24 characters)")
        return servers

    def check_environment(self, environ: Mapping[str, str]) -> None:
        """Every `headers_env` variable of an enabled server is set; else a ConfigError."""
        for name, server in self.servers.items():
            missing = [v for v in server.headers_env.values() if not environ.get(v)]
            if server.enabled and missing:
                raise ConfigError(f"mcp server {name!r}: environment variable(s) "
                                  f"{', '.join(missing)} named by headers_env are not set")


SecretAction = Literal["log", "redact", "block", "off"]
SECRET_RULE_ID = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")


class SecretRuleConfig(_Strict):
    """`[[secrets.rules]]`: an operator's own detector. The secret is the regex's group named
    `secret` if it has one, else the whole match; `keyword` (one or a list) is a prefilter: the
    regex runs only on texts containing one of them (case-sensitive)."""

    id: str = Field(min_length=1, max_length=64)
    regex: str = Field(min_length=1)
    keyword: str | list[str] | None = None
    action: SecretAction | None = None  # default: [secrets] action (overrides still apply)

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        if not SECRET_RULE_ID.fullmatch(value):
            raise ValueError(f"rule id {value!r} must match {SECRET_RULE_ID.pattern}")
        return value

    @field_validator("regex")
    @classmethod
    def _regex(cls, value: str) -> str:
        try:
            pattern = re.compile(value)
        except re.error as e:
            raise ValueError(f"invalid regex {value!r}: {e}") from None
        if pattern.match(""):
            raise ValueError(f"regex {value!r} matches the empty string")
        return value

    @field_validator("keyword")
    @classmethod
    def _keyword(cls, value: str | list[str] | None) -> str | list[str] | None:
        words = [value] if isinstance(value, str) else value or []
        if any(not word for word in words):
            raise ValueError("keywords must not be empty")
        return value


class SecretOverrideConfig(_Strict):
    """`[[secrets.overrides]]`: the action for the matching requests (actor, team, metadata as
    budgets match them; `provider` and `rule` are globs). The first that matches wins."""

    match: MatchConfig = MatchConfig()
    provider: str | None = Field(default=None, min_length=1)
    rule: str | None = Field(default=None, min_length=1)
    action: SecretAction


class SecretsConfig(_Strict):
    """`[secrets]`: secret scanning of what agents send (aibridge.secrets)."""

    action: SecretAction = "redact"
    allow: list[str] = Field(default_factory=list)  # regexes searched in a detected secret
    rules: list[SecretRuleConfig] = Field(default_factory=list)
    overrides: list[SecretOverrideConfig] = Field(default_factory=list)
    entropy: bool = False  # also flag high-entropy quoted strings (noisy on source code)
    examples: bool = False  # also flag documentation examples (AKIAIOSFODNN7EXAMPLE, ...)
    responses: bool = True  # scan model output for findings (recorded, never changed)
    # An environment variable holding the key of the placeholders' hashes: the same secret
    # then gets the same placeholder after a restart and on every bridge sharing it.
    salt_env: str | None = Field(default=None, min_length=1)
    cache_entries: int = Field(default=50_000, ge=0)  # text blocks remembered as scanned

    @field_validator("allow")
    @classmethod
    def _allow(cls, values: list[str]) -> list[str]:
        for value in values:
            try:
                re.compile(value)
            except re.error as e:
                raise ValueError(f"invalid regex {value!r}: {e}") from None
        return values

    @model_validator(mode="after")
    def _unique(self) -> SecretsConfig:
        ids = [rule.id for rule in self.rules]
        if dupes := sorted({i for i in ids if ids.count(i) > 1}):
            raise ValueError(f"duplicate rule id(s) {', '.join(map(repr, dupes))}")
        return self


class TelemetryConfig(_Strict):
    exporter: Literal["none", "console", "otlp"] = "none"
    otlp_endpoint: str | None = None  # base URL; OTEL_EXPORTER_OTLP_* env applies without it
    service_name: str = "aibridge"


FallbackTrigger = Literal["all_keys_cooling", "circuit_open", "unreachable", "5xx"]


class FallbackConfig(_Strict):
    """`[[fallbacks]]`: when provider `from` cannot serve a request (`on`: every central key
    cooling or refused, its circuit breaker open, its upstream unreachable, a 5xx answer), the
    bridge serves it from provider `to`, translating the request and the answer, for the models
    `models` maps (the asked model, a glob, or a name its dated versions start with -> the
    model id on `to`). Today: from an Anthropic API to Amazon Bedrock."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    from_: str = Field(alias="from", min_length=1)
    to: str = Field(min_length=1)
    models: dict[str, str] = Field(min_length=1)
    on: list[FallbackTrigger] = Field(
        default_factory=lambda: ["all_keys_cooling", "circuit_open", "unreachable", "5xx"],
        min_length=1)


class BridgeConfig(_Strict):
    providers: dict[str, ProviderConfig] = Field(default_factory=dict)
    auth: AuthConfig = AuthConfig()
    resilience: ResilienceConfig = ResilienceConfig()
    telemetry: TelemetryConfig = TelemetryConfig()
    egress: EgressConfig = EgressConfig()
    recording: RecordingConfig = RecordingConfig()
    prices: dict[str, PriceConfig] = Field(default_factory=dict)  # model glob -> prices
    budgets: list[BudgetConfig] = Field(default_factory=list)
    budgets_settings: BudgetsSettings = BudgetsSettings()
    limits: list[LimitConfig] = Field(default_factory=list)
    secrets: SecretsConfig = SecretsConfig()
    mcp: McpConfig = McpConfig()  # company tools injected into requests (mcp/)
    state: StateConfig = StateConfig()  # shared with other bridge processes
    max_body_bytes: int = Field(default=MAX_BODY_BYTES, gt=0)
    max_passthrough_body_bytes: int = Field(default=MAX_PASSTHROUGH_BODY_BYTES, gt=0)
    shutdown_grace: float = Field(default=20.0, ge=0)  # seconds in-flight requests get on exit
    fallbacks: list[FallbackConfig] = Field(default_factory=list)  # across providers

    @model_validator(mode="after")
    def _names(self) -> BridgeConfig:
        sources = [f.from_ for f in self.fallbacks]
        for fallback in self.fallbacks:
            types = []
            for name in (fallback.from_, fallback.to):
                provider = self.providers.get(name) or BUILTIN_PROVIDERS.get(name)
                if provider is None:
                    raise ValueError(f"fallbacks: no provider named {name!r}")
                base = BUILTIN_PROVIDERS.get(name)
                types.append(provider.type or (base.type if base else None))
            if types != ["anthropic", "bedrock"]:
                raise ValueError(f"fallbacks: from {fallback.from_!r} to {fallback.to!r}: only "
                                 "an anthropic provider to a bedrock provider is translated")
            if sources.count(fallback.from_) > 1:
                raise ValueError(f"fallbacks: provider {fallback.from_!r} has two fallbacks")
        for kind, entries in (("budgets", self.budgets), ("limits", self.limits)):
            names = [entry.name for entry in entries]
            if dupes := sorted({n for n in names if names.count(n) > 1}):
                raise ValueError(f"{kind}: duplicate name(s) {', '.join(map(repr, dupes))}")
        for glob in self.prices:
            if not glob.strip() or len(glob) > 200:
                raise ValueError(f"prices: {glob!r} is not a model name or glob (1-200 chars)")
        for name, provider in self.providers.items():
            if not PROVIDER_NAME.fullmatch(name):
                raise ValueError(f"provider name {name!r} must match {PROVIDER_NAME.pattern}")
            if provider.type is None and name not in BUILTIN_PROVIDERS:
                raise ValueError(f'provider {name!r} needs type = "openai" or "anthropic" '
                                 '(compatible APIs), or another provider API\'s type '
                                 '("gemini", "azure", "bedrock", ...)')
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
