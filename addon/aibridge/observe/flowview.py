"""What a flow tells its viewers: `flow.metadata["aibridge"]`, the comment and mark mitmweb
shows, and one log line per interception. Only plain JSON values and masked hints go here:
metadata is saved with the flow."""

from __future__ import annotations

from collections.abc import Sequence

from mitmproxy import http

from aibridge.intercept import Actor, CredentialInfo, Interception, ResponseError
from aibridge.observe.accesslog import access
from aibridge.pricing import UNPRICED, Cost, format_usd, short_usd
from aibridge.providers import Provider, RouteMatch
from aibridge.secrets import findings
from aibridge.secrets.findings import Finding
from aibridge.summary import ResponseSummary
from aibridge.textsafe import printable, storable, storable_tree

KEY = "aibridge"


def start(flow: http.HTTPFlow, provider: Provider, match: RouteMatch, actor: Actor) -> None:
    flow.metadata[KEY] = {
        "provider": provider.name,
        "provider_type": provider.type,
        "kind": match.kind,
        "route": match.route,
        "actor": {"id": actor.id, "metadata": dict(actor.metadata)},
    }


def sent(flow: http.HTTPFlow, credential: CredentialInfo,
         interception: Interception | None) -> None:
    meta = flow.metadata[KEY]
    meta["credential"] = credential.to_dict()
    if interception is not None:
        meta["interception"] = storable_tree(interception.to_dict())


def secrets(flow: http.HTTPFlow, findings: Sequence[Finding]) -> None:
    """Secrets scanning found (kind, where, action, placeholder; never a value)."""
    meta = flow.metadata.get(KEY)
    if meta is None or not findings:
        return
    meta.setdefault("secrets", []).extend(storable_tree(f.to_dict()) for f in findings)


def rejected(flow: http.HTTPFlow, error: ResponseError) -> None:
    meta = flow.metadata.get(KEY, {})
    meta.update(outcome="rejected",
                error={"status": error.status, "message": storable(error.message)})
    actor = meta.get("actor", {}).get("id", "?")
    flow.comment = printable(f"{actor} · rejected {error.status} · {error.message}", limit=500)
    flow.marked = ":no_entry:"
    access.info(printable(
        f"aibridge: rejected {flow.request.method} {flow.request.path.split('?')[0]} "
        f"from {actor}: {error.status} {error.message}", limit=2000))


def outcome(flow: http.HTTPFlow, outcome: str, reason: str | None) -> None:
    """The outcome of a flow on a provider host that is not an interception (passthrough)."""
    meta = flow.metadata.get(KEY)
    if meta is None:
        return
    meta["outcome"] = outcome
    if reason:
        meta["error"] = {"status": flow.response.status_code if flow.response else None,
                         "message": storable(reason)}


def ended(flow: http.HTTPFlow, interception: Interception, summary: ResponseSummary | None,
          outcome_: str, reason: str | None, cost: Cost = UNPRICED) -> None:
    """An interception's end, as its viewers see it."""
    outcome(flow, outcome_, reason)
    meta = flow.metadata.get(KEY)
    if meta is None:
        return
    if summary is not None:
        meta["usage"] = storable_tree(summary.to_dict())
    # Text, not a number: metadata is JSON and a float would not keep the exact amount.
    meta["cost"] = {"usd": None if cost.usd is None else str(cost.usd),
                    "source": storable(cost.source) if cost.source else None}
    actor = meta["actor"]["id"]
    flow.comment = comment(actor, interception, summary, outcome_, reason, cost,
                           findings.summary(meta.get("secrets", ())))
    flow.marked = {"completed": "", "warmup": "", "cancelled": ":grey_question:"}.get(
        outcome_, ":x:")
    status = flow.response.status_code if flow.response else "-"
    log(actor, interception, status, summary, outcome_, reason, cost)


def socket_interception(flow: http.HTTPFlow, interception: Interception,
                        summary: ResponseSummary, outcome: str, reason: str | None,
                        cost: Cost = UNPRICED) -> None:
    """One response on a Responses WebSocket: appended to the socket flow's interceptions."""
    meta = flow.metadata.get(KEY)
    if meta is None:
        return
    entry = storable_tree(interception.to_dict() | {
        "usage": summary.to_dict(), "outcome": outcome,
        "cost": {"usd": None if cost.usd is None else str(cost.usd), "source": cost.source}})
    if reason:
        entry["error"] = storable(reason)
    meta.setdefault("interceptions", []).append(entry)
    actor = meta["actor"]["id"]
    count = len(meta["interceptions"])
    noted = findings.summary(meta.get("secrets", ()))
    flow.comment = (f"{actor} · websocket · {count} response(s)"
                    + (f" · {noted}" if noted else "") + " · last: "
                    + comment(None, interception, summary, outcome, reason, cost))
    log(actor, interception, "ws", summary, outcome, reason, cost)


# mitmweb's comment column shows about 25 characters and has no tooltip: what a person scans
# for comes first (who, which model, did it work, how big, what it cost), the rest after.
OUTCOME_LABELS = {"completed": "ok"}


def comment(actor: str | None, interception: Interception, summary: ResponseSummary | None,
            outcome: str, reason: str | None, cost: Cost = UNPRICED, secrets: str = "") -> str:
    """`secrets`: what scanning did ("2 secrets redacted"), right after the lead."""
    tokens = (f"{summary.input_tokens}→{summary.output_tokens} tok"
              if summary is not None else "no usage")
    lead = [actor] if actor is not None else []
    parts = [*lead, interception.model or "?", OUTCOME_LABELS.get(outcome, outcome), tokens,
             short_usd(cost.usd), *([secrets] if secrets else []), interception.provider,
             f"key {interception.credential.hint}"]
    return printable(" · ".join(parts) + (f" · {reason}" if reason else ""), limit=500)


def log(actor: str, interception: Interception, status: object,
        summary: ResponseSummary | None, outcome: str, reason: str | None,
        cost: Cost = UNPRICED) -> None:
    tokens = (f"in {summary.input_tokens} out {summary.output_tokens}"
              if summary is not None else "no usage")
    cred = interception.credential
    # Last, so that a long reason cut to fit the line never cuts the cost off.
    priced = f" cost={format_usd(cost.usd)}"
    access.info(printable(
        f"aibridge: {interception.id} actor={actor} provider={interception.provider} "
        f"model={interception.model} stream={interception.streaming} status={status} "
        + (f"fallback={fb.provider}:{fb.model} " if (fb := interception.fallback) else "")
        + f"credential={cred.kind}:{cred.hint} {tokens} outcome={outcome}"
        + (f" reason={reason!r}" if reason else ""), limit=2000 - len(priced)) + priced)
