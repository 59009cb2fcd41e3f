"""The short-text gate of `Detector.find`: one search for the strings the rules need
(`Rule.needles`) picks the rules worth running. It must never change what is found."""

from __future__ import annotations

import random
import re

import pytest

from aibridge.config import SecretRuleConfig
from aibridge.secrets import scanner
from aibridge.secrets.rules import BUILTIN_RULES, literal_prefixes, rule_set
from aibridge.secrets.scanner import Detector
from tests.unit.test_secrets_rules import CASES, SOURCE_LOOK_ALIKES


@pytest.mark.parametrize("pattern, expected", [
    (r"ghp_[A-Za-z0-9]{36}", ("ghp_",)),
    (r"(?:ghp|gho)_[A-Za-z0-9]{36}", ("ghp_", "gho_")),
    (r"gh[pousr]_x", ("ghp_x", "gho_x", "ghu_x", "ghs_x", "ghr_x")),
    (r"(?<![A-Za-z])AKIA[0-9A-Z]{16}", ("AKIA",)),
    (r"\bsk-(?P<secret>proj-\w+)", ("sk-proj-",)),
    (r"(?:A3T[A-Z0-9]|ABIA|AKIA)[0-9A-Z]{16}", ("A3T", "ABIA", "AKIA")),
    (r"x?abc", ()),  # may start with "a": no literal every match starts with
    (r"[^a]bc", ()),
    (r"(?i)password=\S+", ()),  # ignores case: no list
    (r"(?i:pw)=\S+", ()),
    (r"(?:|a)bc", ("bc", "abc")),  # an empty alternative
    (r"(?:|[a-z])bc", ()),
    (r"[a-z]{3}[0-9]", ()),
])
def test_literal_prefixes(pattern: str, expected: tuple[str, ...]) -> None:
    assert literal_prefixes(re.compile(pattern)) == expected


def test_literal_prefixes_are_bounded() -> None:
    many = "".join("[ab]" for _ in range(10)) + "x"  # 1024 combinations
    assert all(len(p) < 10 for p in literal_prefixes(re.compile(many)))


def _texts() -> list[str]:
    """Every case of every rule, look-alikes, and the cases glued to one another and to
    needles, so needles overlap ("awsk-proj-…") and sit inside one another."""
    rng = random.Random(7)
    texts = [text for trues, falses in CASES.values()
             for text in [t for t, _ in trues] + falses]
    texts += SOURCE_LOOK_ALIKES
    needles = sorted({n for rule in BUILTIN_RULES for n in rule.needles() or ()})
    glued = []
    for text in texts:
        for needle in rng.sample(needles, 6):
            glued += [needle + text, text + needle, needle[:-1] + text,
                      f"{needle}{text[: len(text) // 2]}"]
        glued.append(f"{texts[rng.randrange(len(texts))]} and {text}")
    return texts + glued + ["awsk-proj-" + "A1b2C3d4E5f6G7h8I9j0" * 3 + "T3BlbkFJ",
                            "xAWSKIAQWERTYUIOPASDFGH", "ASIAKIAQWERTYUIOPASDFGH."]


@pytest.mark.parametrize("entropy", [False, True])
def test_the_gate_finds_what_every_rule_finds(monkeypatch, entropy: bool) -> None:
    operator = SecretRuleConfig(id="acme-token", regex=r"token=(?P<secret>acme_[0-9a-f]{16})",
                                keyword="acme_")
    detector = Detector(rule_set([operator], entropy=entropy))
    texts = [*_texts(), "token=acme_0123456789abcdef"]
    monkeypatch.setattr(scanner, "GATED_TEXT", 10**9)  # the gate decides for every text
    gated = [detector.find(t) for t in texts]
    monkeypatch.setattr(scanner, "GATED_TEXT", 0)  # every rule runs
    assert [detector.find(t) for t in texts] == gated
    assert sum(1 for hits in gated if hits) > len(CASES)  # the corpus does hold secrets


def test_needles_are_needed_for_every_case() -> None:
    detector = Detector(rule_set([], entropy=False))
    assert all(rule.needles() for rule in detector.rules)  # every built-in rule can be gated
    for rule_id, (trues, _) in CASES.items():
        kin = [rule for rule in detector.rules if rule.id == rule_id]  # one id, several ways
        for text, _ in trues:
            assert any(any(n in text for n in rule.needles() or ()) for rule in kin), text


def test_a_short_text_without_needles_runs_only_ungated_rules() -> None:
    detector = Detector(rule_set([], entropy=True))
    chosen = detector._worth_running("Hello! How can I help you today?")
    assert [r.id for r in chosen] == [r.id for r in detector.rules if r.needles() is None]
    assert "openai-key" in {r.id for r in detector._worth_running("use awsk-proj-x")}


def test_overlapping_needles_both_count(monkeypatch) -> None:
    """"abc" is found first in "abcde1234"; the search must still see the "cde" that starts
    inside it, or the second rule would be skipped."""
    rules = [SecretRuleConfig(id="first", regex=r"abc[0-9]{4}"),
             SecretRuleConfig(id="second", regex=r"(?P<secret>cde[0-9]{4})")]
    detector = Detector(rule_set(rules, entropy=False))
    assert [r.needles() for r in detector.rules if r.id in ("first", "second")] == [
        ("abc",), ("cde",)]
    assert [h.rule for h in detector.find("x abcde1234 y")] == ["second"]
    monkeypatch.setattr(scanner, "GATED_TEXT", 0)
    assert [h.rule for h in detector.find("x abcde1234 y")] == ["second"]
