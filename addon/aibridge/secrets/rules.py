"""What counts as a secret: the built-in detectors and the operator's `[[secrets.rules]]`.

Each rule is a few compiled patterns, found the cheapest way each allows (see `Rule`): most
start with a literal (`ghp_`, `AKIA`, `-----BEGIN`), which the regex engine searches as fast as
`in`; the others run only where a keyword occurs. A 60 KB text without secrets costs about
1.5 ms for all rules together, once: the scanner remembers the blocks it has seen.

Precision comes first (agents send source code all day): patterns need the provider's own
prefix or a structure no identifier has, are bounded on both sides so a longer token is never
cut in two, and some have a check a regex cannot express (a JWT's header must decode to JSON
naming an algorithm; a password in a URL must not be a placeholder such as `${DB_PASSWORD}`).
Documentation examples (AWS's `AKIAIOSFODNN7EXAMPLE`, jwt.io's token) are not secrets unless
`[secrets] examples = true`: they are public and agents read docs and tests all the time.

Most patterns are those of detect-secrets (Yelp, Apache-2.0, version 1.5.0,
`detect_secrets/plugins/*.py`), bounded and widened where noted; the rest (Anthropic and
OpenAI project keys, Google API keys, GitHub fine-grained tokens, npm tokens, AWS secret keys
in credentials files, whole private-key blocks) follow the providers' documented formats.
detect-secrets itself is not used at run time: its per-line plugin API costs about 100 ms on
a 60 KB tool result (measured), twenty times the budget; `tests/unit/test_secrets_rules.py`
checks that these patterns still find what its plugins find.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import re._constants as _sre_constants
import re._parser as _sre_parse
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from aibridge.config import SecretRuleConfig

Check = Callable[[str, int, int], bool]  # (text, start, end) of a match -> is it a secret


@dataclass(frozen=True)
class Rule:
    """One kind of secret. Several rules may share an id: one kind, found in ways that need
    their own keywords or checks."""

    id: str  # also the kind a placeholder names: [REDACTED aws-access-key #1f3a9c]
    patterns: tuple[re.Pattern[str], ...]  # group "secret" if present, else the whole match
    # How a pattern is found, fastest first:
    # - it starts with a literal (`ghp_`, `-----BEGIN`): the regex engine's own search for
    #   that prefix is as fast as `in` (about 25 µs per 60 KB); no keyword needed;
    # - `keywords`: it runs only on a text holding one (case-sensitive `in`);
    # - `anchor`: it starts with one of these words, case-insensitively (written as given, in
    #   lower and upper case and capitalised): it is tried only where one occurs. A pattern
    #   that starts case-insensitively, or with a lookbehind, loses the engine's prefix search
    #   and costs about 0.6 ms per 60 KB and pattern otherwise.
    keywords: tuple[str, ...] = ()
    anchor: tuple[str, ...] = ()
    check: Check | None = None
    examples: re.Pattern[str] | None = None  # documentation values, not secrets
    action: str | None = None  # the operator rule's own action
    builtin: bool = True
    title: str = ""  # for people: "AWS access key id"

    def __post_init__(self) -> None:
        variants = {v for word in self.anchor
                    for v in (word, word.lower(), word.upper(), word.capitalize())}
        object.__setattr__(self, "_anchors", tuple(sorted(variants)))

    def needles(self) -> tuple[str, ...] | None:
        """Strings one of which every text this rule finds a secret in holds (compared
        case-sensitively), or None when there is no such list: its keywords, its anchor words
        as `_anchored` looks for them, or the literals its patterns start with."""
        if self.keywords:
            return self.keywords
        if self.anchor:
            return self._anchors  # type: ignore[attr-defined]
        found: list[str] = []
        for pattern in self.patterns:
            if not (prefixes := literal_prefixes(pattern)):
                return None
            found += prefixes
        return tuple(dict.fromkeys(found))

    def spans(self, text: str) -> list[tuple[int, int]]:
        """Where the rule's secrets are in `text` (before the allowlist)."""
        if self.keywords and not any(word in text for word in self.keywords):
            return []
        found: list[tuple[int, int]] = []
        for pattern in self.patterns:
            matches = (self._anchored(pattern, text) if self.anchor
                       else pattern.finditer(text))
            secret = "secret" in pattern.groupindex
            for m in matches:
                start, end = m.span("secret") if secret else m.span()
                if start < 0 or end <= start:
                    continue
                if start and _TOKEN_CHAR.get(text[start - 1], False) and not secret:
                    continue  # the tail of a longer token
                if self.check is not None and not self.check(text, start, end):
                    continue
                found.append((start, end))
        return found

    def _anchored(self, pattern: re.Pattern[str], text: str) -> Iterator[re.Match[str]]:
        for word in self._anchors:  # type: ignore[attr-defined]
            at = text.find(word)
            while at >= 0:
                if (m := pattern.match(text, at)) is not None:
                    yield m
                at = text.find(word, at + 1)


MAX_PREFIXES = 64  # alternatives a pattern's literal starts are expanded to, at most


def literal_prefixes(pattern: re.Pattern[str]) -> tuple[str, ...]:
    """Literal texts one of which every match of `pattern` starts with; () when there is no
    such list (the pattern may start with anything, or ignores case). Read from the regex
    engine's own parse: literals, groups, alternatives (`(?:ghp|gho)_`), zero-width
    assertions skipped; it stops at the first item that is none of these."""
    if pattern.flags & re.IGNORECASE:
        return ()
    try:
        found, _ = _starts(list(_sre_parse.parse(pattern.pattern, pattern.flags)))
    except Exception:  # a private module's shape changed: no list, never a wrong one
        return ()
    return () if "" in found else tuple(dict.fromkeys(found))


def _starts(items: list) -> tuple[list[str], bool]:
    """(the literal starts of `items`, whether each covers all of `items`)."""
    C = _sre_constants
    starts = [""]
    for op, arg in items:
        if op is C.LITERAL:
            starts = [s + chr(arg) for s in starts]
            continue
        if op in (C.ASSERT, C.ASSERT_NOT, C.AT):
            continue  # consumes nothing: what follows it follows the literal before it
        if op is C.SUBPATTERN and not arg[1] & re.IGNORECASE:
            inner, whole = _starts(list(arg[3]))
        elif op is C.BRANCH:
            alternatives = [_starts(list(alternative)) for alternative in arg[1]]
            inner = [s for found, _ in alternatives for s in found]
            whole = all(w for _, w in alternatives)
        elif op is C.IN and arg and all(kind is C.LITERAL for kind, _ in arg):
            inner, whole = [chr(code) for _, code in arg], True  # [pour]: one of these
        else:
            return starts, False
        combined = [s + t for s in starts for t in inner]
        if len(combined) > MAX_PREFIXES:
            return starts, False
        starts = combined
        if not whole:
            return starts, False
    return starts, True


# Not followed by another character of the token: a longer token is not cut. (Not preceded
# either: `Rule.spans` checks that, since a pattern that starts with a lookbehind loses the
# regex engine's fast search for its literal prefix, about thirty times slower.)
_E = r"(?![A-Za-z0-9_])"
_TOKEN_CHAR = dict.fromkeys("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_", True)


def _c(pattern: str, flags: int = 0) -> re.Pattern[str]:
    return re.compile(pattern, flags)


# -- checks -------------------------------------------------------------------------------------

_PLACEHOLDER = re.compile(
    r"(?i)^(?:\$\{?\w*\}?|\{\{.*\}\}|<[^>]*>|\[[^\]]*\]|%s|%\(\w+\)s|\*+|x+|\.+|_+|-+|"
    r"pass|passwd|password|pwd|secret|changeme|change_me|example|user|username|test|"
    r"redacted|your[-_]?password|mypassword|none|null|undefined|"
    r"(?-i:[A-Z][A-Z0-9_]*))$")  # an environment variable's name: TOKEN, DB_PASSWORD


def _not_placeholder(text: str, start: int, end: int) -> bool:
    secret = text[start:end]
    return len(secret) >= 3 and _PLACEHOLDER.match(secret) is None


_CONNECTION_START = re.compile(r"(?i)(?:server|data source|host|address)\s*=[^;\n]*;")


def _connection_string(text: str, start: int, end: int) -> bool:
    """`Password=` inside a `Server=...;` string on the same line, and no placeholder."""
    line = text.rfind("\n", max(0, start - 400), start) + 1
    return (_CONNECTION_START.search(text, max(line, start - 400), start) is not None
            and _not_placeholder(text, start, end))


def _mixed(text: str, start: int, end: int) -> bool:
    secret = text[start:end]
    return not secret.isalpha() and not secret.isdigit()


def _b64json(part: str) -> object:
    padded = part + "=" * (-len(part) % 4)
    try:
        return json.loads(base64.urlsafe_b64decode(padded))
    except (ValueError, binascii.Error, UnicodeDecodeError):
        return None


def _jwt(text: str, start: int, end: int) -> bool:
    """A signed JWT: its header is JSON naming an algorithm (not "none"), its payload JSON."""
    header, payload, _signature = text[start:end].split(".", 2)
    head = _b64json(header)
    return (isinstance(head, dict) and isinstance(head.get("alg"), str)
            and head["alg"].lower() != "none" and isinstance(_b64json(payload), dict))


def entropy(text: str) -> float:
    """Shannon entropy in bits per character."""
    counts: dict[str, int] = {}
    for c in text:
        counts[c] = counts.get(c, 0) + 1
    n = len(text)
    return -sum(k / n * math.log2(k / n) for k in counts.values())


ENTROPY_LIMIT = 4.5  # detect-secrets' Base64HighEntropyString default


def _high_entropy(text: str, start: int, end: int) -> bool:
    secret = text[start:end]
    return (entropy(secret) >= ENTROPY_LIMIT and any(c.isdigit() for c in secret)
            and any(c.isupper() for c in secret) and any(c.islower() for c in secret))


# -- the built-in rules ----------------------------------------------------------------------------

_PEM_LABEL = r"-----BEGIN[A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----"
# A key block's body: base64, PEM headers (Proc-Type: 4,ENCRYPTED), line breaks whether real
# or escaped (`\n` in a JSON string a tool printed), and the line-number margins agents put in
# front of file lines (`  12→`, `  12\t`).
_PEM_BODY = r"[A-Za-z0-9+/=:,\s\\→-]"

BUILTIN_RULES: tuple[Rule, ...] = (
    Rule(
        "aws-access-key",
        (_c(r"(?:A3T[A-Z0-9]|ABIA|ACCA|AKIA|ASIA)[0-9A-Z]{16}" + _E),),  # detect-secrets aws
        examples=_c(r"EXAMPLE$"),  # AWS's documentation: AKIAIOSFODNN7EXAMPLE
        title="AWS access key id"),
    Rule(
        "aws-secret-key",
        (
            # detect-secrets aws: a 40-character value quoted near "aws" and "key"/"token"...
            _c(r"aws.{0,20}?(?:key|pwd|pw|password|pass|token).{0,20}?['\"]"
               r"(?P<secret>[0-9a-zA-Z/+]{40})['\"]", re.IGNORECASE),
            # ... and the unquoted forms of credentials files and environments, which it misses.
            _c(r"aws_?secret_?access_?key['\"]?\s*[:=]\s*['\"]?(?P<secret>[A-Za-z0-9/+]{40})"
               r"(?![A-Za-z0-9/+=])", re.IGNORECASE),
        ),
        anchor=("aws",),
        check=_mixed,
        examples=_c(r"EXAMPLEKEY$"),  # wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY
        title="AWS secret access key"),
    Rule(
        "anthropic-key",
        (_c(r"sk-ant-(?:api|admin|oat|ort|sid)\d{2}-[A-Za-z0-9_-]{32,}" + r"(?![A-Za-z0-9_-])"),),
        title="Anthropic API key"),
    Rule(
        "openai-key",
        (
            # detect-secrets openai (the "T3BlbkFJ" mark), widened to today's longer keys.
            _c(r"sk-[A-Za-z0-9_-]*?[A-Za-z0-9_-]{20}T3BlbkFJ[A-Za-z0-9_-]{20,}"
               r"(?![A-Za-z0-9_-])"),
            _c(r"sk-(?:proj|svcacct|admin)-[A-Za-z0-9_-]{40,}(?![A-Za-z0-9_-])"),
        ),
        title="OpenAI API key"),
    Rule(
        "google-api-key",
        (_c(r"AIza[0-9A-Za-z_-]{35}(?![0-9A-Za-z_-])"),),
        title="Google API key"),
    Rule(
        "github-token",
        (
            _c(r"(?:ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9_]{36}" + _E),  # detect-secrets github
            _c(r"github_pat_[A-Za-z0-9_]{82}" + _E),  # fine-grained tokens
        ),
        title="GitHub token"),
    Rule(
        "gitlab-token",
        (  # detect-secrets gitlab_token
            _c(r"(?:glpat|gldt|glft|glsoat|glrt)-[A-Za-z0-9_\-]{20,50}(?!\w)"),
            _c(r"GR1348941[A-Za-z0-9_\-]{20,50}(?!\w)"),
            _c(r"glcbt-(?:[0-9a-fA-F]{2}_)?[A-Za-z0-9_\-]{20,50}(?!\w)"),
            _c(r"glimt-[A-Za-z0-9_\-]{25}(?!\w)"),
            _c(r"glptt-[A-Za-z0-9_\-]{40}(?!\w)"),
            _c(r"glagent-[A-Za-z0-9_\-]{50,1024}(?!\w)"),
            _c(r"gloas-[A-Za-z0-9_\-]{64}(?!\w)"),
        ),
        title="GitLab token"),
    Rule(
        "slack-token",
        # detect-secrets slack; a token's last part has at least 10 characters here
        (_c(r"xox(?:a|b|p|o|s|r)-(?:\d+-)+[a-z0-9]{10,}" + _E, re.IGNORECASE),),
        anchor=("xox",),
        title="Slack token"),
    Rule(
        "slack-token",
        # detect-secrets slack: a webhook URL, as Slack gives it (lower case)
        (_c(r"https://hooks\.slack\.com/services/T[a-zA-Z0-9_]+/B[a-zA-Z0-9_]+/[a-zA-Z0-9_]+"),),
        title="Slack webhook"),
    Rule(
        "stripe-key",
        # detect-secrets stripe, any length; two literal starts are faster than one choice
        (_c(r"sk_live_[0-9a-zA-Z]{24,}" + _E), _c(r"rk_live_[0-9a-zA-Z]{24,}" + _E)),
        title="Stripe live key"),
    Rule(
        "npm-token",
        (
            _c(r"npm_[A-Za-z0-9]{36}" + _E),
            # detect-secrets npm: an .npmrc auth line, the token alone.
            _c(r"//[^\s/]+/(?:[^\s]*/)?:_authToken=\s*(?P<secret>npm_[A-Za-z0-9]{36}|"
               r"[A-Fa-f0-9-]{36})"),
        ),
        title="npm token"),
    Rule(
        "pypi-token",
        (  # detect-secrets pypi_token
            _c(r"pypi-AgEIcHlwaS5vcmc[A-Za-z0-9_-]{70,}"),
            _c(r"pypi-AgENdGVzdC5weXBpLm9yZw[A-Za-z0-9_-]{70,}"),
        ),
        title="PyPI token"),
    Rule(
        "private-key",
        (
            # The whole block: detect-secrets private_key flags the BEGIN line only, and a
            # redaction must take the key with it. A block cut short (a partial read) goes
            # from BEGIN to the end of its base64.
            _c(_PEM_LABEL + r"(?:" + _PEM_BODY + r"{64,16384}?-----END[A-Z0-9 ]{0,40}PRIVATE KEY"
               r"(?: BLOCK)?-----|(?:[A-Za-z0-9+/=\s\\→]){64,16384})"),
            _c(r"PuTTY-User-Key-File-[23]: [^\n]*\n[\s\S]{0,16384}?Private-MAC: [0-9a-fA-F]+"),
        ),
        title="private key"),
    Rule(
        "jwt",
        # detect-secrets jwt, stricter: both parts JSON objects and a signature.
        (_c(r"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{16,}"
            r"(?![A-Za-z0-9_-])"),),
        check=_jwt,
        # jwt.io's sample token, in countless READMEs and tests.
        examples=_c(r"^eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9\.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6"
                    r"IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ\.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_a"
                    r"dQssw5c$"),
        title="JSON Web Token"),
    Rule(
        "connection-password",
        (
            # detect-secrets basic_auth: the password of `scheme://user:password@host`.
            _c(r"://[^:/?#\[\]@!$&'()*+,;=\s\\\"`<>{}|]+:(?P<secret>[^:/?#\[\]@!$&'()*+,;=\s\\\""
               r"`<>{}|]+)@"),
        ),
        check=_not_placeholder,
        title="password in a connection string"),
    Rule(
        "connection-password",
        # ADO.NET-style key=value strings: Server=...;User Id=...;Password=...
        (_c(r"(?i)(?:password|pwd)\s*=\s*(?P<secret>[^;'\"\s]{3,})"),),
        anchor=("password", "pwd"),
        check=_connection_string,
        title="password in a connection string"),
    Rule(
        "azure-storage-key",
        (_c(r"AccountKey=(?P<secret>[a-zA-Z0-9+/=]{88})"),),  # detect-secrets azure_storage_key
        title="Azure storage account key"),
    Rule(
        "sendgrid-key",
        (_c(r"SG\.[a-zA-Z0-9_-]{22}\.[a-zA-Z0-9_-]{43}(?![a-zA-Z0-9_-])"),),  # detect-secrets
        title="SendGrid API key"),
    Rule(
        "square-token",
        (_c(r"sq0csp-[0-9A-Za-z\-_]{43}(?![0-9A-Za-z\-_])"),),  # detect-secrets square_oauth
        title="Square OAuth secret"),
)

# Only with `[secrets] entropy = true`: a quoted string of 20 or more base64 characters whose
# entropy is as high as detect-secrets' default limit. Noisy on source code (hashes, ids).
ENTROPY_RULE = Rule(
    "high-entropy-string",
    (_c(r"""(?P<q>['"`])(?P<secret>[A-Za-z0-9+/=_-]{20,200})(?P=q)"""),),
    check=_high_entropy,
    title="high-entropy string")


def operator_rule(config: SecretRuleConfig) -> Rule:
    keywords = ((config.keyword,) if isinstance(config.keyword, str)
                else tuple(config.keyword or ()))
    return Rule(config.id, (re.compile(config.regex),), keywords=keywords,
                action=config.action, builtin=False, title=config.id)


def rule_set(configs: Sequence[SecretRuleConfig], *, entropy: bool) -> tuple[Rule, ...]:
    """The built-in rules (an operator rule with a built-in id replaces it), then the
    operator's in file order."""
    own = [operator_rule(c) for c in configs]
    replaced = {r.id for r in own}
    rules = [r for r in BUILTIN_RULES if r.id not in replaced]
    if entropy and ENTROPY_RULE.id not in replaced:
        rules.append(ENTROPY_RULE)
    return (*rules, *own)

