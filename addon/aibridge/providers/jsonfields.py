"""Type-checked reads of JSON from clients and upstreams we do not control: an odd shape yields a
missing value, never an exception. Shared by the provider API modules."""

from __future__ import annotations

import json

from aibridge.summary import ResponseSummary

try:  # jiter comes with the openai SDK; it parses these small objects ~4x faster than json
    from jiter import from_json as _jiter_loads
except ImportError:  # pragma: no cover - json alone is only slower
    _jiter_loads = None

UNKNOWN_MODEL = "unknown"
# Longest model name the bridge keeps. Provider model ids are far shorter (fine-tuned OpenAI ids
# and Bedrock ARNs stay under ~120); anything longer is cut where it is read, so records,
# breaker keys, logs and metric labels stay bounded whatever a client sends.
MAX_MODEL_CHARS = 256


def _d(v: object) -> dict:
    return v if isinstance(v, dict) else {}


def _list(v: object) -> list:
    return v if isinstance(v, list) else []


def _s(v: object) -> str | None:
    """A non-empty string or None."""
    return v if isinstance(v, str) and v else None


def capped_model(model: str) -> str:
    """A model name cut to MAX_MODEL_CHARS; an ellipsis marks the cut."""
    return model if len(model) <= MAX_MODEL_CHARS else model[:MAX_MODEL_CHARS - 1] + "…"


def _text(v: object) -> str:
    return v if isinstance(v, str) else ""


def _n(v: object) -> int:
    """A token count: positive ints only (bool is an int subclass, so check the type)."""
    return v if type(v) is int and v > 0 else 0


def _idx(v: object) -> int:
    """A stream index usable as a dict key (JSON could hand us an unhashable list)."""
    return v if type(v) is int else 0


def _last(v: object) -> dict:
    return _d(v[-1]) if isinstance(v, list) and v else {}


def _dumps(v: object) -> str:
    return json.dumps(v, ensure_ascii=False, separators=(",", ":"))


def _json_text(text: str) -> object:
    """json.loads, or None for anything that is not JSON (json's verdict)."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None


def _json_str(text: str) -> object:
    """An event's data as JSON: jiter when it accepts the text, json otherwise.

    Where jiter succeeds it agrees with json.loads; whatever it refuses (lone surrogates,
    nesting past its limit, ...) is retried with json.loads, so the verdict is always json's.
    """
    if _jiter_loads is not None:
        try:
            return _jiter_loads(text.encode())
        except Exception:
            pass
    return _json_text(text)


def _json_bytes(data: bytes) -> object:
    """`_json_str(data.decode("utf-8", "replace"))` without decoding when jiter accepts it."""
    if _jiter_loads is not None:
        try:
            return _jiter_loads(data)  # invalid UTF-8 fails here and is retried below
        except Exception:
            pass
    return _json_text(data.decode("utf-8", "replace"))


_loads = _jiter_loads or _json_bytes  # feed_raw's first try (then _json_text if it raises)


def json_loads(data: bytes | str) -> object:
    """`json.loads(data)`, value and errors alike, through jiter where jiter accepts the text.

    Where jiter succeeds it agrees with json.loads; whatever it refuses (a BOM, UTF-16, lone
    surrogates, nesting past its limit, invalid JSON, ...) goes to json.loads for the verdict.
    """
    if _jiter_loads is not None and isinstance(data, bytes):
        try:
            return _jiter_loads(data)
        except Exception:  # any refusal is json's to judge
            pass
    return json.loads(data)



def _put_extra(s: ResponseSummary, key: str, value: object) -> None:
    if n := _n(value):
        s.extra_tokens[key] = n


def _set_error(s: ResponseSummary, message: str | None, kind: str | None) -> None:
    # The first error is the cause; later ones (e.g. response.failed after error) repeat it.
    if s.error is None:
        s.error = message or kind or "unknown error"
        s.error_type = kind



def _role(message: object) -> str | None:
    return message.get("role") if isinstance(message, dict) else None


def _content_text(content: object, text_type: str) -> str | None:
    """String content, or the text of the LAST block of `text_type` (earlier blocks are usually
    attached context such as files or reminders; the typed prompt comes last)."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return None
    for block in reversed(content):
        if isinstance(block, dict) and block.get("type") == text_type:
            text = block.get("text")
            return text if isinstance(text, str) else None
    return None


def _join(blocks: dict[tuple[str, int], list[str]]) -> dict[str, str]:
    """Blocks of the same kind in index order, one per paragraph."""
    out: dict[str, list[str]] = {}
    for (label, _), pieces in sorted(blocks.items(), key=lambda kv: kv[0]):
        out.setdefault(label, []).append("".join(pieces))
    return {label: "\n".join(parts) for label, parts in out.items()}
