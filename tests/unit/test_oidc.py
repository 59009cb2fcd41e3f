"""The OIDC validator: tokens signed by the issuer's keys (served as JWKS over HTTPS by a local
server) become actors; anything expired, wrongly signed, for another audience or issuer, or
with an algorithm outside the list is refused; the request path never fetches keys."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import tomllib
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from aibridge.access.actors import ActorDirectory
from aibridge.access.oidc import OidcValidator, claim, looks_like_jwt
from aibridge.config import BridgeConfig, ConfigError, OidcConfig, load_config
from tests.oidc_issuer import AUDIENCE, Issuer


@pytest.fixture(scope="module")
def issuer(tmp_path_factory):
    with Issuer(tmp_path_factory.mktemp("issuer")) as issuer:
        yield issuer


def oidc_config(issuer: Issuer, **extra) -> OidcConfig:
    config = BridgeConfig.model_validate(tomllib.loads(issuer.config(**extra))).auth.oidc
    assert config is not None
    return config


@pytest.fixture
def validator(issuer):
    v = OidcValidator(oidc_config(issuer), Path("/"))
    yield v
    v.close()


def digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def test_a_token_of_the_issuer_becomes_an_actor(issuer, validator):
    assert validator.key_count == 2
    token = issuer.token(email="alice@example.com", groups=["ml", "platform"],
                         preferred_username="alice")
    identity = validator.authenticate(token)
    assert identity is not None
    assert identity.actor.id == "alice@example.com"
    assert dict(identity.actor.metadata) == {"Team": "ml,platform", "Username": "alice"}
    assert identity.expires == pytest.approx(time.time() + 300, abs=5)
    es = validator.authenticate(issuer.token(kid="ec-1", email="bob@example.com"))
    assert es is not None and es.actor.id == "bob@example.com"  # ES256 too
    assert validator.by_digest(digest(token)) == identity


@pytest.mark.parametrize("case", ["expired", "audience", "issuer", "other key", "same kid",
                                  "hs256", "none", "no exp", "no email", "unlisted alg",
                                  "not yet"])
def test_tokens_the_issuer_did_not_vouch_for_are_refused(issuer, validator, case):
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    claims = {"email": "mallory@example.com"}
    if case == "expired":
        token = issuer.token(lifetime=-120, **claims)  # beyond the 30 s leeway
    elif case == "audience":
        token = issuer.token(aud="another-app", **claims)
    elif case == "issuer":
        token = issuer.token(iss="https://evil.example.com", **claims)
    elif case == "other key":
        token = issuer.token(kid="unknown-kid", key=stranger, **claims)
    elif case == "same kid":  # a forger reusing a published key id
        token = issuer.token(kid="rsa-1", key=stranger, **claims)
    elif case == "hs256":  # the public key's PEM used as an HMAC secret (key confusion)
        pem = issuer.keys["rsa-1"].public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        token = _signed({"alg": "HS256", "kid": "rsa-1"}, {
            "iss": "https://sso.example.com/realms/acme", "aud": AUDIENCE,
            "exp": int(time.time()) + 60, **claims},
            lambda data: hmac.new(pem, data, hashlib.sha256).digest())
    elif case == "none":
        token = _signed({"alg": "none", "kid": "rsa-1"}, {
            "iss": "https://sso.example.com/realms/acme", "aud": AUDIENCE,
            "exp": int(time.time()) + 60, **claims}, lambda data: b"x")
    elif case == "no exp":
        token = issuer.token(exp=None, **claims)
    elif case == "no email":
        token = issuer.token()
    elif case == "unlisted alg":
        token = issuer.token(alg="RS512", **claims)  # the key is RSA, but RS512 is not allowed
    else:
        token = issuer.token(nbf=int(time.time()) + 600, **claims)
    assert validator.authenticate(token) is None


def _signed(header: dict, payload: dict, sign) -> str:
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    head = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"
    return f"{head}.{b64(sign(head.encode()))}"


def test_the_request_path_never_fetches_keys(issuer, validator):
    before = issuer.fetches
    for i in range(20):
        assert validator.authenticate(issuer.token(email=f"user{i}@example.com"))
    validator.authenticate(issuer.token(lifetime=-300, email="late@example.com"))
    assert issuer.fetches == before


def test_a_new_key_is_fetched_in_the_background_after_a_token_names_it(issuer, validator):
    issuer.add_key("rsa-2", rsa.generate_private_key(public_exponent=65537, key_size=2048))
    token = issuer.token(kid="rsa-2", email="carol@example.com")
    assert validator.authenticate(token) is None  # not known yet: refused, refresh asked
    deadline = time.monotonic() + 10
    while validator.key_count < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    identity = validator.authenticate(token)
    assert identity is not None and identity.actor.id == "carol@example.com"
    # A second unknown id within the cooldown does not make the issuer's server busy.
    fetches = issuer.fetches
    validator.authenticate(issuer.token(kid="rsa-3", key=rsa.generate_private_key(
        public_exponent=65537, key_size=2048), email="x@example.com"))
    time.sleep(0.3)
    assert issuer.fetches == fetches


def test_accepted_tokens_are_remembered_until_they_expire(issuer):
    now = [time.time()]
    v = OidcValidator(oidc_config(issuer), Path("/"), clock=lambda: now[0])
    try:
        token = issuer.token(email="dave@example.com", lifetime=60)
        assert v.authenticate(token) is not None
        assert v.by_digest(digest(token)) is not None
        now[0] += 120
        assert v.by_digest(digest(token)) is None
    finally:
        v.close()


def test_unreachable_keys_refuse_tokens_until_they_can_be_fetched(issuer, tmp_path):
    config = oidc_config(issuer).model_copy(update={"jwks_url": "https://127.0.0.1:9/jwks",
                                                    "fetch_timeout": 1.0})
    v = OidcValidator(config, Path("/"))
    try:
        assert v.key_count == 0 and v.last_error is not None
        assert v.authenticate(issuer.token(email="eve@example.com")) is None
    finally:
        v.close()


def test_the_directory_checks_jwt_shaped_passwords_with_the_issuer(issuer, validator):
    directory = ActorDirectory({}, None, oidc=validator)
    assert directory.requires_auth
    token = issuer.token(email="alice@example.com", groups="ml")
    actor = directory.authenticate(token)
    assert actor is not None and actor.metadata["Team"] == "ml"
    assert directory.by_token_digest(digest(token)) == actor
    assert directory.expiry(digest(token)) == pytest.approx(time.time() + 300, abs=5)
    assert directory.authenticate("plain-password") is None
    assert directory.expiry(digest("plain-password")) is None
    assert not looks_like_jwt("a.b") and looks_like_jwt("a.b.c")


def test_claims_by_dotted_name():
    claims = {"realm_access": {"roles": ["dev"]}, "a.b": "literal"}
    assert claim(claims, "realm_access.roles") == ["dev"]
    assert claim(claims, "a.b") == "literal"
    assert claim(claims, "missing.x") is None


def test_config_validation(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[auth.oidc]\nissuer = "i"\naudience = "a"\njwks_url = "ftp://x/j"\n')
    with pytest.raises(ConfigError, match="jwks_url"):
        load_config(bad)
    bad.write_text('[auth.oidc]\nissuer = "i"\naudience = "a"\njwks_url = "https://x/j"\n'
                   'algorithms = ["HS256"]\n')
    with pytest.raises(ConfigError, match="algorithms"):
        load_config(bad)
    bad.write_text('[auth.oidc]\nissuer = "i"\naudience = "a"\njwks_url = "https://x/j"\n'
                   'metadata_claims = { "Bad Key" = "groups" }\n')
    with pytest.raises(ConfigError, match="header token"):
        load_config(bad)
    good = tmp_path / "good.toml"
    good.write_text('[auth.oidc]\nissuer = "i"\naudience = ["a", "b"]\n'
                    'jwks_url = "https://x/j"\nca_file = "ca.pem"\n')
    config, base = load_config(good)
    assert config.auth.oidc.resolved_ca_file(base) == tmp_path / "ca.pem"


def test_a_reload_keeps_the_validator_or_seeds_a_new_one_with_its_keys(issuer, tmp_path):
    from aibridge.settings import Settings

    path = tmp_path / "aibridge.toml"
    path.write_text(issuer.config())
    first = Settings.load(str(path))
    v1 = first.actors.oidc
    keys = len(issuer.published)
    assert v1 is not None and v1.key_count == keys and first.actors.requires_auth
    assert any("sign-in tokens of https://sso.example.com" in line
               for line in first.describe())
    same = Settings.load(str(path), previous=first)
    assert same.actors.oidc is v1 and same.state is first.state  # nothing changed: kept
    path.write_text(issuer.config(id_claim="sub"))
    fetches = issuer.fetches
    changed = Settings.load(str(path), previous=same)
    v2 = changed.actors.oidc
    assert v2 is not v1 and v2.key_count == keys  # the keys of before, no waiting
    assert changed.state is first.state  # budget spend and windows carry over
    identity = v2.authenticate(issuer.token(email="x@example.com", sub="user-42"))
    assert identity is not None and identity.actor.id == "user-42"
    assert issuer.fetches - fetches <= 1  # at most the background refresh
    for settings in (first, changed):
        settings.actors.oidc.close()
