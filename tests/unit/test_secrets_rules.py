"""The detectors: every rule finds its secret and leaves look-alikes alone; the patterns
derived from detect-secrets still find what its own plugins find (the plain twin of the
compiled fast path)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from aibridge.config import ConfigError, SecretRuleConfig, SecretsConfig, load_config
from aibridge.secrets.rules import BUILTIN_RULES, ENTROPY_RULE, rule_set
from aibridge.secrets.scanner import Detector

PEM_BODY = "\n".join(["MIIEowIBAAKCAQEAx4UbaDzY5xjW9hoJbS7Xb2yqE4Fr0mK1eQ9ZhN3cP8vR6tL2"] * 5)
PEM = f"-----BEGIN RSA PRIVATE KEY-----\n{PEM_BODY}\n-----END RSA PRIVATE KEY-----"
JWT = ("eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhbGljZSIsImV4cCI6MTcwMDAwMDAwMH0"
       ".dGhpcy1pcy1ub3QtYS1yZWFsLXNpZ25hdHVyZS1idXQtbG9uZw")
AWS_SECRET = "Xq3ZtL8vN2pR7sK1mB4cD9fG6hJ0wE5yU2iO8aPZ"

# rule -> (texts holding one secret: the text, the secret), look-alikes
CASES: dict[str, tuple[list[tuple[str, str]], list[str]]] = {
    "aws-access-key": (
        [("id=AKIAZ7Q3XWERTYUIOPLK;", "AKIAZ7Q3XWERTYUIOPLK"),
         ("ASIAQWERTYUIOPASDFGH", "ASIAQWERTYUIOPASDFGH")],
        ["AKIAIOSFODNN7EXAMPLE", "MYAKIAQWERTYUIOPASDFGH", "AKIAQWERTYUIOPASDFGHJ",
         "akiaqwertyuiopasdfgh"]),
    "aws-secret-key": (
        [(f"aws_secret_access_key = {AWS_SECRET}\n", AWS_SECRET),
         (f"AWS_SECRET_ACCESS_KEY={AWS_SECRET}", AWS_SECRET),
         (f'Aws_Secret_Access_Key: "{AWS_SECRET}"', AWS_SECRET),
         (f'aws = {{"key": "{AWS_SECRET}"}}', AWS_SECRET)],
        ["aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
         "aws_secret_access_key = os.environ['AWS_SECRET_ACCESS_KEY']",
         "aws_secret_access_key = abcdefghijabcdefghijabcdefghijabcdefghij"]),
    "anthropic-key": (
        [("key: sk-ant-api03-" + "Ab1_" * 23 + "xAA", "sk-ant-api03-" + "Ab1_" * 23 + "xAA")],
        ["sk-ant-central-0123456789abcdefgh", "sk-ant-api03-short"]),
    "openai-key": (
        [("sk-proj-" + "aB3dE5fG7h" * 5, "sk-proj-" + "aB3dE5fG7h" * 5),
         ("sk-" + "a" * 20 + "T3BlbkFJ" + "b" * 20, "sk-" + "a" * 20 + "T3BlbkFJ" + "b" * 20)],
        ["sk-user-placeholder", "sk-proj-short", "risk-proj-aB3dE5fG7haB3dE5fG7haB3dE5fG7haB3"]),
    "google-api-key": (
        [("AIzaSyD4-x9Q_vB2nM7kL0pW3eR5tY8uI1oP6aZ", "AIzaSyD4-x9Q_vB2nM7kL0pW3eR5tY8uI1oP6aZ")],
        ["AIzaShort", "AIzaSyD4-x9Q_vB2nM7kL0pW3eR5tY8uI1oP6aZextra"]),
    "github-token": (
        [("ghp_" + "a1B2c3D4e5" * 3 + "F6g7H8", "ghp_" + "a1B2c3D4e5" * 3 + "F6g7H8"),
         ("github_pat_" + "A1b2C3d4E5" * 8 + "xy", "github_pat_" + "A1b2C3d4E5" * 8 + "xy")],
        ["ghp_short", "ghp_" + "a" * 37]),
    "gitlab-token": ([("glpat-x7Yz9Wq2Er4Ty6Ui8Op0", "glpat-x7Yz9Wq2Er4Ty6Ui8Op0")],
                     ["glpat-short"]),
    "slack-token": (
        [("xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx",
          "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx"),
         ("https://hooks.slack.com/services/T0001/B0002/XXXXXXXXXXXXXXXXXXXXXXXX",
          "https://hooks.slack.com/services/T0001/B0002/XXXXXXXXXXXXXXXXXXXXXXXX")],
        ["xoxb-not-a-token", "xoxb-1-2"]),
    "stripe-key": ([("sk_live_4eC39HqLyjWDarjtT1zdp7dc", "sk_live_4eC39HqLyjWDarjtT1zdp7dc")],
                   ["sk_test_4eC39HqLyjWDarjtT1zdp7dc", "sk_live_short"]),
    "npm-token": (
        [("npm_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789", "npm_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789"),
         ("//registry.npmjs.org/:_authToken=123e4567-e89b-12d3-a456-426614174000",
          "123e4567-e89b-12d3-a456-426614174000")],
        ["npm_install_script", "123e4567-e89b-12d3-a456-426614174000"]),
    "pypi-token": ([("pypi-AgEIcHlwaS5vcmc" + "CJ" * 40, "pypi-AgEIcHlwaS5vcmc" + "CJ" * 40)],
                   ["pypi-token"]),
    "private-key": (
        [(f"x\n{PEM}\ny", PEM),
         # a JSON-escaped block, and one cut short (a partial read)
         (PEM.replace("\n", "\\n"), PEM.replace("\n", "\\n")),
         ("-----BEGIN OPENSSH PRIVATE KEY-----\n" + PEM_BODY,
          "-----BEGIN OPENSSH PRIVATE KEY-----\n" + PEM_BODY)],
        ['if line.startswith("-----BEGIN RSA PRIVATE KEY-----"):',
         "-----BEGIN PUBLIC KEY-----\n" + PEM_BODY]),
    "jwt": (
        [(f"Authorization: Bearer {JWT}", JWT)],
        ["eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9l"
         "IiwiaWF0IjoxNTE2MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c",
         "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.c2lnbmF0dXJlc2lnbmF0dXJl",
         "eyJub3QiOiJqd3QifQ.eyJzdWIiOiJ4In0.c2lnbmF0dXJlc2lnbmF0dXJl"]),
    "connection-password": (
        [("postgres://app:Tr0ub4dor-3x@db.internal:5432/app", "Tr0ub4dor-3x"),
         ("mongodb+srv://root:s3cr3t.Pw@cluster0.example.net", "s3cr3t.Pw"),
         ("Server=db;Database=app;User Id=sa;Password=Pa55w0rd!x;", "Pa55w0rd!x")],
        ["postgres://app:${DB_PASSWORD}@db/app", "https://user:password@example.com",
         "http://me:TOKEN@host:8080", "http://<you>:<token>@host:port",
         "password = getpass()", "Password=Pa55w0rd!x"]),
    "azure-storage-key": ([("AccountKey=" + "Zm9vYmFy" * 11 + ";", "Zm9vYmFy" * 11)],
                          ["AccountKey=short"]),
    "sendgrid-key": (
        [("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",
          "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")],
        ["SG.short.key"]),
    "square-token": (
        [("sq0csp-a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8s9T0u1V",
          "sq0csp-a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8s9T0u1V")],
        ["sq0csp-short"]),
}
SOURCE_LOOK_ALIKES = [
    "d41d8cd98f00b204e9800998ecf8427e",
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "123e4567-e89b-12d3-a456-426614174000",
    "commit 2fd4e1c67a2d28fced849ee1bb76e7391b93eb12",
    "const API_KEY = process.env.OPENAI_API_KEY;",
    "api_key = os.environ['ANTHROPIC_API_KEY']",
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhf",
    "https://example.com/path?token=abc",
]


@pytest.fixture(scope="module")
def detector() -> Detector:
    return Detector(rule_set([], entropy=False))


def test_every_builtin_rule_has_cases() -> None:
    assert {r.id for r in BUILTIN_RULES} == set(CASES)


@pytest.mark.parametrize("rule", sorted(CASES))
def test_a_rule_finds_its_secret_and_only_it(detector: Detector, rule: str) -> None:
    trues, falses = CASES[rule]
    for text, secret in trues:
        hits = detector.find(text)
        assert [(h.rule, text[h.start:h.end]) for h in hits] == [(rule, secret)], text
    for text in falses:
        assert detector.find(f"x {text} y") == (), text


def test_source_code_look_alikes_find_nothing(detector: Detector) -> None:
    for text in SOURCE_LOOK_ALIKES:
        assert detector.find(text) == (), text


def test_examples_can_be_flagged_and_secrets_allowed() -> None:
    examples = Detector(rule_set([], entropy=False), examples=True)
    assert [h.rule for h in examples.find("AKIAIOSFODNN7EXAMPLE")] == ["aws-access-key"]
    allowed = Detector(rule_set([], entropy=False), allow=["^AKIATEST"])
    assert allowed.find("AKIATEST1234567890AB AKIAQWERTYUIOPASDFGH")[0].start == 21


def test_operator_rules_and_entropy() -> None:
    rule = SecretRuleConfig(id="acme-token", regex=r"token=(?P<secret>acme_[0-9a-f]{16})",
                            keyword="acme_")
    detector = Detector(rule_set([rule], entropy=True))
    text = "token=acme_0123456789abcdef and 'Zk3pQ9rT2vX8mN4bL7cW1yH6'"
    assert [(h.rule, text[h.start:h.end]) for h in detector.find(text)] == [
        ("acme-token", "acme_0123456789abcdef"),
        (ENTROPY_RULE.id, "Zk3pQ9rT2vX8mN4bL7cW1yH6")]
    assert Detector(rule_set([rule], entropy=True)).find("'aaaaaaaaaaaaaaaaaaaaaaaa'") == ()
    # An operator rule with a built-in id replaces it.
    own = SecretRuleConfig(id="jwt", regex="eyJ[a-z]{4}")
    replaced = Detector(rule_set([own], entropy=False))
    assert [h.rule for h in replaced.find("x eyJabcd y z")] == ["jwt"]


@pytest.mark.parametrize("bad, message", [
    ({"rules": [{"id": "x", "regex": "("}]}, "invalid regex"),
    ({"rules": [{"id": "x", "regex": "a*"}]}, "matches the empty string"),
    ({"rules": [{"id": "Bad Id", "regex": "a"}]}, "must match"),
    ({"rules": [{"id": "x", "regex": "a"}, {"id": "x", "regex": "b"}]}, "duplicate rule id"),
    ({"allow": ["["]}, "invalid regex"),
    ({"action": "drop"}, "Input should be"),
])
def test_bad_rules_are_refused(bad: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        SecretsConfig.model_validate(bad)


def test_a_bad_rule_is_a_config_error_naming_it(tmp_path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[[secrets.rules]]\nid = "acme"\nregex = "("\n')
    with pytest.raises(ConfigError, match=r"secrets\.rules\.0\.regex: .*invalid regex"):
        load_config(path)


# -- the plain twin: detect-secrets' own plugins --------------------------------------------------

TWINS = {  # detect-secrets plugin -> our rule
    "AWSKeyDetector": ("aws-access-key", "aws-secret-key"), "GitHubTokenDetector": "github-token",
    "GitLabTokenDetector": "gitlab-token", "SlackDetector": "slack-token",
    "StripeDetector": "stripe-key", "PypiTokenDetector": "pypi-token",
    "JwtTokenDetector": "jwt", "BasicAuthDetector": "connection-password",
    "AzureStorageKeyDetector": "azure-storage-key", "SendGridDetector": "sendgrid-key",
    "SquareOAuthDetector": "square-token", "PrivateKeyDetector": "private-key",
    "OpenAIDetector": "openai-key", "NpmDetector": "npm-token",
}


def test_what_detect_secrets_finds_we_find(detector: Detector) -> None:
    plugins = pytest.importorskip("detect_secrets.core.plugins.util")
    classes = {c.__name__: c for c in plugins.get_mapping_from_secret_type_to_class().values()}
    assert set(TWINS) <= set(classes)
    texts = [text for trues, _ in CASES.values() for text, _ in trues]
    agreed = 0
    for name, rule in TWINS.items():
        rules = rule if isinstance(rule, tuple) else (rule,)
        plugin = classes[name]()
        for text in texts:
            # Their plugins read one line at a time; ours read the whole text (a key block
            # spans lines).
            ours = [(h.rule, text[h.start:h.end]) for h in detector.find(text)]
            for line in text.splitlines():
                theirs = [s for s in plugin.analyze_string(line) if s]
                if not theirs:
                    continue
                # The same kind, and the same secret (theirs may include its label: AccountKey=).
                assert all(any(r in rules and (secret in found or found in secret)
                               for r, found in ours)
                           for secret in theirs), (name, text, theirs, ours)
                agreed += 1
    assert agreed >= len(TWINS)
