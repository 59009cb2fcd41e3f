"""Identity from the company's sign-in through a real mitmdump: a JWT signed by the issuer's
keys (whose JWKS a local HTTPS server serves) is a proxy password; its claims make the actor
the provider sees and the budgets and limits match; expired, wrongly signed and wrong-audience
tokens get 407; a tunnel whose token expires is refused and closed; and the request path never
fetches keys."""

from __future__ import annotations

import time

import jwt
import openai
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.e2e.harness import provider_config
from tests.oidc_issuer import Issuer

MESSAGES = [{"role": "user", "content": "hi"}]
LIMITS = """
[[limits]]
name = "platform-rpm"
match = { team = "platform" }
rpm = 1
"""


@pytest.fixture(scope="module")
def issuer(tmp_path_factory):
    with Issuer(tmp_path_factory.mktemp("issuer")) as issuer:
        yield issuer


@pytest.fixture(scope="module")
def signed_in(fake, make_bridge, issuer):
    # Beside the actors file; no clock-skew leeway, so a short token expires when it says.
    return make_bridge(provider_config(fake.url, extra=LIMITS + issuer.config(leeway=0)))


def test_a_signed_token_is_the_proxy_password_and_names_the_actor(signed_in, fake, issuer):
    token = issuer.token(email="alice@example.com", groups=["ml", "research"],
                         preferred_username="alice")
    reply = signed_in.openai(token=token).chat.completions.create(model="gpt-4o",
                                                                  messages=MESSAGES)
    assert reply.choices[0].message.content == "Hello from fake"
    seen = fake.requests[-1]
    assert seen.header("X-AI-Bridge-Actor-ID") == "alice@example.com"
    assert seen.header("X-AI-Bridge-Actor-Metadata-Team") == "ml,research"
    assert seen.header("X-AI-Bridge-Actor-Metadata-Username") == "alice"
    assert token not in signed_in.log()  # the token is a secret: never logged
    # ES256 tokens too; and the actors file still works beside the issuer.
    es = issuer.token(kid="ec-1", email="bob@example.com")
    signed_in.openai(token=es).chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert fake.requests[-1].header("X-AI-Bridge-Actor-ID") == "bob@example.com"
    signed_in.openai().chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert fake.requests[-1].header("X-AI-Bridge-Actor-ID") == "alice"


@pytest.mark.parametrize("case", ["expired", "wrong signature", "wrong audience"])
def test_tokens_the_issuer_did_not_vouch_for_get_407(signed_in, issuer, case):
    if case == "expired":
        token = issuer.token(email="mallory@example.com", lifetime=-5)
    elif case == "wrong signature":
        forger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        token = issuer.token(kid="rsa-1", key=forger, email="mallory@example.com")
    else:
        token = issuer.token(email="mallory@example.com", aud="some-other-app")
    sock, head = signed_in.connect("api.openai.com", 443, token=token)
    sock.close()
    assert head.startswith(b"HTTP/1.1 407"), head
    with pytest.raises(openai.APIConnectionError):
        signed_in.openai(token=token).chat.completions.create(model="gpt-4o",
                                                              messages=MESSAGES)
    signed_in.wait_for_log(r"OIDC token refused: (expired|bad signature|wrong audience)")


def test_the_request_path_makes_no_call_to_the_issuer(signed_in, issuer):
    fetches = issuer.fetches
    for i in range(5):
        token = issuer.token(email=f"user{i}@example.com")
        signed_in.openai(token=token).chat.completions.create(model="gpt-4o",
                                                              messages=MESSAGES)
    assert issuer.fetches == fetches


def test_claims_are_what_limits_match(signed_in, issuer):
    token = issuer.token(email="pat@example.com", groups=["platform"])
    client = signed_in.openai(token=token)
    client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    with pytest.raises(openai.RateLimitError) as refused:
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert 'rate limit "platform-rpm" (team=platform)' in refused.value.message


def test_a_tunnel_whose_token_expired_is_refused(signed_in, issuer):
    token = issuer.token(email="short@example.com", lifetime=2)
    expires = jwt.decode(token, options={"verify_signature": False})["exp"]
    client = signed_in.openai(token=token)
    client.chat.completions.create(model="gpt-4o", messages=MESSAGES)  # opens the tunnel
    time.sleep(max(0.0, expires - time.time()) + 0.2)  # until the token has expired
    with pytest.raises(openai.APIStatusError) as refused:
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES)  # same tunnel
    assert refused.value.status_code == 407
    assert "sign-in token expired" in refused.value.message
