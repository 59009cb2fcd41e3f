"""Secret scanning: the admission step that reads every text a bridged request carries (its
API says which: `WireApi.texts`) and, per finding, logs it, redacts it or refuses the request.

The action of a finding is the first `[[secrets.overrides]]` entry that matches the actor
(id, team, metadata, as budgets match them), the provider and the rule; else the rule's own
`action`; else `[secrets] action` (redact by default). `off` means not scanned at all: an
actor and provider whose every rule is off pays nothing.

- log: the request goes as sent; the finding is recorded, and every copy the bridge keeps (the
  recorded prompt, the flow's request body once sent) shows the placeholder instead.
- redact: the secret is replaced by its placeholder in the body sent upstream (re-encoded,
  `Content-Length` set; a WebSocket frame is replaced).
- block: 400 `secret_detected`, naming the kind and where, never the secret.

Texts the provider signed (thinking blocks, reasoning summaries) are the provider's own output
coming back: changing one would void the request, so a finding there is only logged.
"""

from __future__ import annotations

import fnmatch
import functools
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from mitmproxy import http

from aibridge.admission.matching import Matcher
from aibridge.admission.pipeline import Candidate
from aibridge.config import SecretsConfig
from aibridge.intercept import (
    OPENAI_ERR_TYPE_INVALID_REQUEST,
    Actor,
    ResponseError,
    new_response_error,
)
from aibridge.providers.base import WireApi
from aibridge.providers.jsonfields import json_loads
from aibridge.providers.texts import strings
from aibridge.secrets.findings import BLOCK, LOG, OFF, REDACT, Finding
from aibridge.secrets.scanner import MIN_TEXT, Hit, Scanner, redact
from aibridge.settings import Settings

CACHE_SIZE = 8192  # (actor, provider, rule) actions remembered
PASSTHROUGH_LIMIT = 1 << 20  # held passthrough bodies are at most this (flow.passthrough)


@dataclass(frozen=True)
class Override:
    matcher: Matcher
    rule: re.Pattern[str] | None
    action: str


class SecretsPolicy:
    """Which action applies to a finding of `rule` in a request of `actor` to `provider`."""

    def __init__(self, config: SecretsConfig, scanner: Scanner, team_key: str) -> None:
        self.scanner = scanner
        self.default = config.action
        self.rule_ids = tuple(dict.fromkeys(rule.id for rule in scanner.detector.rules))
        self.rule_actions = {rule.id: rule.action for rule in scanner.detector.rules
                             if rule.action is not None}
        self.overrides = tuple(
            Override(Matcher.build(o.match, o.provider, None, team_key),
                     re.compile(fnmatch.translate(o.rule)) if o.rule else None, o.action)
            for o in config.overrides)
        self._actions: dict[tuple[Actor, str, str], str] = {}
        self._scans: dict[tuple[Actor, str], bool] = {}

    def action(self, actor: Actor, provider: str, rule: str) -> str:
        key = (actor, provider, rule)
        found = self._actions.get(key)
        if found is None:
            found = next((o.action for o in self.overrides
                          if (o.rule is None or o.rule.fullmatch(rule))
                          and o.matcher.applies(actor, provider, "")),
                         self.rule_actions.get(rule, self.default))
            if len(self._actions) >= CACHE_SIZE:
                self._actions.clear()
            self._actions[key] = found
        return found

    def scans(self, actor: Actor, provider: str) -> bool:
        """Whether any rule is not `off` for this actor and provider."""
        key = (actor, provider)
        found = self._scans.get(key)
        if found is None:
            found = any(self.action(actor, provider, rule) != OFF for rule in self.rule_ids)
            if len(self._scans) >= CACHE_SIZE:
                self._scans.clear()
            self._scans[key] = found
        return found


@dataclass
class SecretsOutcome:
    """What the step found in one request, for the forwarder, the recorder and the views."""

    findings: list[Finding] = field(default_factory=list)
    rewritten: bool = False  # the body was redacted: what goes upstream must be re-encoded
    # Masks a request body (parsed, in place; True if it changed) the way every copy the bridge
    # keeps must be: set when a secret stays in what was sent or refused (log, block).
    mask: Callable[[dict], bool] | None = None

    def mask_stored(self, request: http.Request) -> None:
        """The body the flow keeps, as it went (or would have gone) upstream, masked."""
        if self.mask is None:
            return
        try:
            body = json_loads(request.get_content(strict=False) or b"")
        except (ValueError, UnicodeDecodeError, RecursionError):
            return
        if isinstance(body, dict) and self.mask(body):
            request.content = encode(body)

    def mask_frame(self, text: str) -> str | None:
        """A `response.create` frame as it must be kept, or None when nothing changes."""
        if self.mask is None:
            return None
        try:
            frame = json.loads(text)
        except ValueError:
            return None
        if not isinstance(frame, dict):
            return None
        body = frame.get("response") if isinstance(frame.get("response"), dict) else frame
        return encode(frame).decode() if self.mask(body) else None


@dataclass
class SecretScan:
    """The admission step (before the credential: a blocked request costs no key)."""

    policy: SecretsPolicy

    def admit(self, candidate: Candidate) -> None:
        actor = candidate.actor
        if actor is None:
            return
        policy, provider = self.policy, candidate.provider.name
        if not policy.scans(actor, provider):
            return
        body, api = candidate.body, candidate.api
        if body is None:  # a passthrough (count_tokens, batches...): its held JSON, if any
            body = passthrough_json(candidate.request)
            if body is None:
                return
        texts = api.texts(body) if api is not None else strings(body, "request field")
        scan = policy.scanner.scan
        found = []
        for slot in texts:
            text = slot.container[slot.key]  # type: ignore[index]
            if type(text) is str and len(text) >= MIN_TEXT and (hits := scan(text)):
                found.append((slot, text, hits))
        if not found:
            return
        outcome = SecretsOutcome()
        blocked: Finding | None = None
        kept = False  # a secret stays in the body (log, block, or signed)
        for slot, text, hits in found:
            redacted: list[Hit] = []
            for hit in hits:
                action = policy.action(actor, provider, hit.rule)
                if action == OFF:
                    continue
                if slot.signed:
                    action = LOG
                finding = Finding(hit.rule, slot.where, action, hit.digest)
                outcome.findings.append(finding)
                if action == REDACT:
                    redacted.append(hit)
                else:
                    kept = True
                    if action == BLOCK and blocked is None:
                        blocked = finding
            if redacted and blocked is None:
                slot.replace(redact(text, redacted))
                outcome.rewritten = True
        if not outcome.findings:
            return
        candidate.secrets = outcome
        if kept:
            outcome.mask = functools.partial(mask_body, api=api, scanner=policy.scanner)
        if outcome.rewritten and candidate.body is None:
            outcome.rewritten = False  # a passthrough: re-encoded here, nothing else reads it
            if blocked is None and candidate.request is not None:
                candidate.request.content = encode(body)
        if blocked is not None:
            raise secret_error(blocked)
        if outcome.rewritten and candidate.request is not None:
            candidate.request.content = encode(body)

    def release(self, candidate: Candidate) -> None:
        pass

    def screen(self, actor: Actor, provider: str, where: str,
               text: str) -> tuple[str, list[Finding]]:
        """A text the bridge itself puts in a request (a bridge tool's result, for the next
        round of its tool loop) as it may go upstream, with what was found: redacted secrets
        become placeholders; a secret to block withholds the whole text (the model reads why,
        the loop goes on); logged ones stay, as in a client's request."""
        policy = self.policy
        if len(text) < MIN_TEXT or not policy.scans(actor, provider):
            return text, []
        findings, redacted = [], []
        blocked: Finding | None = None
        for hit in policy.scanner.scan(text):
            action = policy.action(actor, provider, hit.rule)
            if action == OFF:
                continue
            finding = Finding(hit.rule, where, action, hit.digest)
            findings.append(finding)
            if action == REDACT:
                redacted.append(hit)
            elif action == BLOCK and blocked is None:
                blocked = finding
        if blocked is not None:
            return (f"[AI Bridge withheld this tool result: it holds a secret ({blocked.rule}, "
                    f"{blocked.placeholder}) that is not sent to the provider]"), findings
        return (redact(text, redacted) if redacted else text), findings


def secret_scan(settings: Settings) -> SecretScan | None:
    """The step for these settings; None when scanning is off everywhere."""
    setup = settings.secrets
    if setup is None:
        return None
    return SecretScan(SecretsPolicy(setup.config, setup.scanner,
                                    settings.config.budgets_settings.team_key))


def secret_error(finding: Finding) -> ResponseError:
    rule = finding.rule
    return new_response_error(
        f"secret detected: {rule} in {finding.where} ({finding.placeholder}). The bridge does "
        "not send secrets to the provider; remove it from the conversation (it stays in every "
        "later request of this one: start a new one, or rewind past it) or ask your "
        "administrator to allow it", OPENAI_ERR_TYPE_INVALID_REQUEST, "secret_detected", 400,
        should_retry=False)


def encode(body: dict) -> bytes:
    """A JSON body as compact UTF-8 (JSON allows lone surrogates, UTF-8 does not: escaped)."""
    text = json.dumps(body, ensure_ascii=False, separators=(",", ":"))
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(body, separators=(",", ":")).encode("ascii")


def passthrough_json(request: http.Request | None) -> dict | None:
    """The JSON object of a held passthrough body (a streamed one is never read)."""
    if request is None or request.stream or not request.raw_content \
            or len(request.raw_content) > PASSTHROUGH_LIMIT:
        return None
    mime = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if mime != "application/json" and not mime.endswith("+json"):
        return None
    try:
        body = json_loads(request.get_content(strict=False) or b"")
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    return body if isinstance(body, dict) else None


def mask_body(body: dict, api: WireApi | None, scanner: Scanner) -> bool:
    """Every secret the rules find in `body`'s texts replaced by its placeholder (the blocks
    were scanned before: this reads the scanner's memory). True if anything changed."""
    changed = False
    for slot in api.texts(body) if api is not None else strings(body, "request field"):
        text = slot.container[slot.key]  # type: ignore[index]
        if type(text) is str and len(text) >= MIN_TEXT and (hits := scanner.scan(text)):
            slot.replace(redact(text, hits))
            changed = True
    return changed
