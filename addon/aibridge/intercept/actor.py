"""Actor identity and the trusted `X-AI-Bridge-Actor-*` headers sent upstream.

An actor is who is calling (resolved from the proxy credentials, never from request headers). Its
id and metadata travel upstream as headers only when the bridge sets them; `headers.py` strips every
client-sent header with this prefix, whatever the provider's settings, so a client cannot claim
another identity (docs/behaviour.md §3).
"""

from __future__ import annotations

import re
import types
from collections.abc import Mapping
from dataclasses import dataclass, field

ACTOR_HEADER_PREFIX = "X-AI-Bridge-Actor"
_ACTOR_PREFIX_LOWER = ACTOR_HEADER_PREFIX.lower()

# RFC 9110 §5.6.2 token: metadata keys become part of a header name.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# Values must not be able to end the header line or smuggle another one.
_UNSAFE_VALUE = re.compile(r"[\r\n\x00]")


def actor_id_header() -> str:
    return f"{ACTOR_HEADER_PREFIX}-ID"


def actor_metadata_header(name: str) -> str:
    """Header for one metadata key, used verbatim: `Username` ⇒ `...-Metadata-Username`."""
    return f"{ACTOR_HEADER_PREFIX}-Metadata-{name}"


def is_actor_header(name: str) -> bool:
    """True for every header in the actor namespace (`X-AI-Bridge-Request-ID` is not one), in
    any case and with `_` for `-`: servers that map header names to variables (CGI, WSGI,
    nginx's `underscores_in_headers`) read `X_AI_Bridge_Actor_ID` as the real one."""
    return name.lower().replace("_", "-").startswith(_ACTOR_PREFIX_LOWER)


@dataclass(frozen=True)
class Actor:
    """An authenticated caller. Metadata is copied into a read-only map of strings.

    Invalid keys or values raise `ValueError` at construction, so a bad actors file fails at load
    time instead of producing a malformed upstream request later.
    """

    id: str
    metadata: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        metadata = {str(k): str(v) for k, v in self.metadata.items()}
        for key, value in metadata.items():
            if not _TOKEN.fullmatch(key):
                raise ValueError(f"actor {self.id!r}: metadata key {key!r} is not a header token")
            if _UNSAFE_VALUE.search(value):
                raise ValueError(f"actor {self.id!r}: metadata {key!r} contains a line break")
        if _UNSAFE_VALUE.search(self.id):
            raise ValueError("actor id contains a line break")
        # Frozen dataclass: the supported way to normalise a field is object.__setattr__.
        object.__setattr__(self, "metadata", types.MappingProxyType(metadata))

    def __hash__(self) -> int:
        # Order-insensitive, like the generated __eq__ (mapping equality ignores order).
        return hash((self.id, frozenset(self.metadata.items())))


def actor_headers(actor: Actor | None) -> list[tuple[str, str]]:
    """The trusted actor headers: the ID first, then one header per metadata key in order."""
    if actor is None:
        return []
    return [(actor_id_header(), actor.id)] + [
        (actor_metadata_header(key), value) for key, value in actor.metadata.items()
    ]


def actor_headers_as_openai_opts(actor: Actor | None) -> dict[str, dict[str, str]]:
    """Keyword options for the OpenAI SDK: `client.chat.completions.create(**opts, ...)`."""
    return {"extra_headers": dict(actor_headers(actor))}


def actor_headers_as_anthropic_opts(actor: Actor | None) -> dict[str, dict[str, str]]:
    """Keyword options for the Anthropic SDK: `client.messages.create(**opts, ...)`."""
    return {"extra_headers": dict(actor_headers(actor))}
