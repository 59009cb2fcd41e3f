"""What a flow tells its viewers: `flow.metadata["aibridge"]`, the comment and mark mitmweb
shows, and one log line per interception. Only plain JSON values and masked hints go here:
metadata is saved with the flow."""

from __future__ import annotations

import json
from dataclasses import dataclass

from mitmproxy import http

from aibridge.errors.proxy_failures import is_client_cancel
from aibridge.intercept import Actor, CredentialInfo, Interception, ResponseError
from aibridge.observe.accesslog import access
from aibridge.providers import Provider, RouteMatch
from aibridge.providers.parsing import summarize_json
from aibridge.streaming.tap import StreamTap
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


def rejected(flow: http.HTTPFlow, error: ResponseError) -> None:
    meta = flow.metadata.get(KEY, {})
    meta.update(outcome="rejected",
                error={"status": error.status, "message": storable(error.message)})
    flow.comment = printable(f"aibridge rejected: {error.status} {error.message}", limit=500)
    flow.marked = ":no_entry:"
    access.info(printable(
        f"aibridge: rejected {flow.request.method} {flow.request.path.split('?')[0]} "
        f"from {meta.get('actor', {}).get('id', '?')}: {error.status} {error.message}",
        limit=2000))


@dataclass(frozen=True)
class Ending:
    outcome: str  # completed | failed | cancelled | rejected
    reason: str | None
    summary: ResponseSummary | None


def finish(flow: http.HTTPFlow, interception: Interception | None, tap: StreamTap | None,
           route: str | None) -> Ending:
    meta = flow.metadata.get(KEY)
    if meta is None or meta.get("outcome") == "rejected":
        return Ending("rejected", None, None)
    outcome, reason = _outcome(flow, tap)
    meta["outcome"] = outcome
    if reason:
        meta["error"] = {"status": flow.response.status_code if flow.response else None,
                         "message": storable(reason)}
    if interception is None:
        return Ending(outcome, reason, None)
    summary = _summary(flow, tap, route)
    if summary is not None:
        meta["usage"] = storable_tree(summary.to_dict())
    actor = meta["actor"]["id"]
    flow.comment = comment(actor, interception, summary, outcome, reason)
    flow.marked = {"completed": "", "cancelled": ":grey_question:"}.get(outcome, ":x:")
    status = flow.response.status_code if flow.response else "-"
    log(actor, interception, status, summary, outcome, reason)
    return Ending(outcome, reason, summary)


def socket_interception(flow: http.HTTPFlow, interception: Interception,
                        summary: ResponseSummary, outcome: str, reason: str | None) -> None:
    """One response on a Responses WebSocket: appended to the socket flow's interceptions."""
    meta = flow.metadata.get(KEY)
    if meta is None:
        return
    entry = storable_tree(interception.to_dict() | {"usage": summary.to_dict(),
                                                     "outcome": outcome})
    if reason:
        entry["error"] = storable(reason)
    meta.setdefault("interceptions", []).append(entry)
    actor = meta["actor"]["id"]
    count = len(meta["interceptions"])
    flow.comment = (f"websocket · {count} response(s) · last: "
                    + comment(actor, interception, summary, outcome, reason))
    log(actor, interception, "ws", summary, outcome, reason)


def comment(actor: str, interception: Interception, summary: ResponseSummary | None,
            outcome: str, reason: str | None) -> str:
    tokens = (f"in {summary.input_tokens} out {summary.output_tokens}"
              if summary is not None else "no usage")
    return printable(f"{actor} → {interception.provider} {interception.model} · key "
                     f"{interception.credential.hint} · {tokens} · {outcome}"
                     + (f": {reason}" if reason else ""), limit=500)


def log(actor: str, interception: Interception, status: object,
        summary: ResponseSummary | None, outcome: str, reason: str | None) -> None:
    tokens = (f"in {summary.input_tokens} out {summary.output_tokens}"
              if summary is not None else "no usage")
    cred = interception.credential
    access.info(printable(
        f"aibridge: {interception.id} actor={actor} provider={interception.provider} "
        f"model={interception.model} stream={interception.streaming} status={status} "
        f"credential={cred.kind}:{cred.hint} {tokens} outcome={outcome}"
        + (f" reason={reason!r}" if reason else ""), limit=2000))


def _outcome(flow: http.HTTPFlow, tap: StreamTap | None) -> tuple[str, str | None]:
    if flow.error is not None:
        if is_client_cancel(flow.error.msg):
            if tap is not None and tap.summary.completed and not tap.summary.error:
                # The OpenAI SDK hangs up at `data: [DONE]`, sometimes before the last
                # (empty) chunk arrives: the client got everything.
                return "completed", None
            return "cancelled", flow.error.msg
        return "failed", flow.error.msg
    response = flow.response
    if response is None:
        return "failed", "no response"
    if response.status_code >= 400:
        return "failed", f"upstream status {response.status_code}"
    if tap is not None and tap.summary.error:
        return "failed", tap.summary.error
    return "completed", None


def _summary(flow: http.HTTPFlow, tap: StreamTap | None,
             route: str | None) -> ResponseSummary | None:
    if tap is not None:
        return tap.summary
    response = flow.response
    if route is None or response is None or not 200 <= response.status_code < 300:
        return None
    try:
        return summarize_json(route, json.loads(response.get_content(strict=False) or b""))
    except ValueError:
        return None
