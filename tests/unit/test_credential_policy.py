"""Which credential goes upstream: central key or the caller's own (reference §2.2, §4.2)."""

import dataclasses
from pathlib import Path

import pytest
from mitmproxy.http import Headers

from aibridge.access.actors import token_digest
from aibridge.admission.credential import UpstreamCredential, resolve_credential
from aibridge.config import BridgeConfig
from aibridge.intercept import OPENAI_ERR_TYPE_AUTHENTICATION, CredentialKind, ResponseError
from aibridge.model import KeyPoolError, PoolErrorKind
from aibridge.providers import Provider, build_registry

OPENAI_KEY = "sk-central-openai-0123456789"
ANTHROPIC_KEY = "sk-ant-api03-central-0123456789"
USER_KEY = "sk-user-personal-abcdefghij"
OAUTH = "sk-ant-oat01-subscription-token-abcdef"
PROXY_TOKEN = "proxy-token-of-alice-123"


def provider(name: str, mode: str, keys: bool = True) -> Provider:
    environ = (
        {
            "AIBRIDGE_OPENAI_KEYS": f"{OPENAI_KEY},sk-second",
            "AIBRIDGE_ANTHROPIC_KEYS": f"{ANTHROPIC_KEY},sk-ant-second",
        }
        if keys
        else {}
    )
    config = BridgeConfig.model_validate({"providers": {name: {"credentials": mode}}})
    reg = build_registry(config, Path("/nonexistent"), environ=environ)
    return next(p for p in reg.providers if p.name == name)


def headers(**fields: str) -> Headers:
    return Headers(**fields)


NONE = {}
OPENAI_BEARER = {"authorization": f"Bearer {USER_KEY}"}
ANTHROPIC_API_KEY = {"x_api_key": USER_KEY}
ANTHROPIC_OAUTH = {"authorization": f"Bearer {OAUTH}"}
ANTHROPIC_BOTH = {"x_api_key": USER_KEY, "authorization": f"Bearer {OAUTH}"}


def resolve(p: Provider, client: dict, proxy_token: str | None = None) -> UpstreamCredential:
    digest = token_digest(proxy_token) if proxy_token else None
    return resolve_credential(p, headers(**client), digest)


def assert_central(cred: UpstreamCredential, p: Provider) -> None:
    secret = OPENAI_KEY if p.type == "openai" else ANTHROPIC_KEY
    assert cred.info.kind is CredentialKind.CENTRALIZED
    assert cred.key is p.pool.keys[0]
    assert cred.key.secret == secret
    if p.type == "openai":
        assert (cred.header, cred.value) == ("Authorization", f"Bearer {secret}")
    else:
        assert (cred.header, cred.value) == ("X-Api-Key", secret)
    assert cred.info.auth_header == cred.header


# -- centralized -------------------------------------------------------------------------------


@pytest.mark.parametrize("client", [NONE, OPENAI_BEARER, ANTHROPIC_API_KEY])
def test_centralized_openai_always_uses_the_first_pool_key(client):
    p = provider("openai", "centralized")
    assert_central(resolve(p, client), p)


@pytest.mark.parametrize(
    "client", [NONE, OPENAI_BEARER, ANTHROPIC_API_KEY, ANTHROPIC_OAUTH, ANTHROPIC_BOTH]
)
def test_centralized_anthropic_always_uses_the_first_pool_key(client):
    p = provider("anthropic", "centralized")
    assert_central(resolve(p, client), p)


def test_centralized_hint_is_masked():
    cred = resolve(provider("openai", "centralized"), NONE)
    assert cred.info.hint == "sk-c...6789"
    assert cred.info.length == len(OPENAI_KEY)
    assert OPENAI_KEY not in repr(cred.info)


def test_centralized_info_is_made_once_per_key():
    p = provider("anthropic", "centralized")
    first, again = resolve(p, NONE), resolve(p, ANTHROPIC_API_KEY)
    assert first.key is again.key
    assert first.info is again.info is p.pool.keys[0].info("X-Api-Key")


def test_exhausted_pool_becomes_a_429_with_retry_after():
    class Exhausted:
        def select(self):
            raise KeyPoolError(PoolErrorKind.RATE_LIMITED, 3)

    p = dataclasses.replace(provider("openai", "centralized"), pool=Exhausted())
    with pytest.raises(ResponseError) as info:
        resolve(p, NONE)
    assert info.value.status == 429
    assert info.value.retry_after == 3
    assert info.value.message == "all configured keys are rate-limited (retry after 3s)"


# -- byok --------------------------------------------------------------------------------------


def test_byok_openai_bearer_is_passed_through():
    cred = resolve(provider("openai", "byok"), OPENAI_BEARER)
    assert (cred.header, cred.value) == ("Authorization", f"Bearer {USER_KEY}")
    assert cred.info.kind is CredentialKind.BYOK
    assert cred.info.auth_header == "Authorization"
    assert cred.key is None


def test_byok_openai_ignores_x_api_key():
    with pytest.raises(ResponseError) as info:
        resolve(provider("openai", "byok"), ANTHROPIC_API_KEY)
    assert info.value.status == 401


def test_byok_anthropic_x_api_key():
    cred = resolve(provider("anthropic", "byok"), ANTHROPIC_API_KEY)
    assert (cred.header, cred.value) == ("X-Api-Key", USER_KEY)
    assert cred.info.kind is CredentialKind.BYOK
    assert cred.info.auth_header == "X-Api-Key"


def test_byok_anthropic_oauth_bearer():
    cred = resolve(provider("anthropic", "byok"), ANTHROPIC_OAUTH)
    assert (cred.header, cred.value) == ("Authorization", f"Bearer {OAUTH}")
    assert cred.info.kind is CredentialKind.BYOK
    assert cred.info.hint == "sk-a...cdef"


def test_byok_anthropic_x_api_key_wins_over_bearer():
    cred = resolve(provider("anthropic", "byok"), ANTHROPIC_BOTH)
    assert (cred.header, cred.value) == ("X-Api-Key", USER_KEY)


def test_byok_anthropic_blank_x_api_key_falls_back_to_bearer():
    cred = resolve(
        provider("anthropic", "byok"), {"x_api_key": "  ", "authorization": f"Bearer {OAUTH}"}
    )
    assert cred.header == "Authorization"


@pytest.mark.parametrize("name", ["openai", "anthropic"])
@pytest.mark.parametrize("keys", [True, False])
def test_byok_without_credential_is_401(name, keys):
    p = provider(name, "byok", keys=keys)
    with pytest.raises(ResponseError) as info:
        resolve(p, NONE)
    error = info.value
    assert error.status == 401
    assert error.type == OPENAI_ERR_TYPE_AUTHENTICATION == "authentication_error"
    assert error.code == "missing_api_key"
    assert f"provider {name!r}" in error.message
    assert p.api.credential.name in error.message


@pytest.mark.parametrize("value", ["Basic dXNlcjpwYXNz", "Bearer", "Bearer a b", USER_KEY])
def test_byok_malformed_bearer_is_no_credential(value):
    with pytest.raises(ResponseError) as info:
        resolve(provider("openai", "byok"), {"authorization": value})
    assert info.value.status == 401


def test_byok_hint_is_masked_and_secret_absent():
    cred = resolve(provider("openai", "byok"), OPENAI_BEARER)
    assert cred.info.hint == "sk-u...ghij"
    assert cred.info.length == len(USER_KEY)
    assert USER_KEY not in repr(cred.info)
    assert USER_KEY not in str(cred.info.to_dict())


# -- auto --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["openai", "anthropic"])
def test_auto_without_client_credential_is_centralized(name):
    p = provider(name, "auto")
    assert_central(resolve(p, NONE, PROXY_TOKEN), p)


def test_auto_with_the_proxy_token_as_openai_key_is_centralized():
    p = provider("openai", "auto")
    assert_central(resolve(p, {"authorization": f"Bearer {PROXY_TOKEN}"}, PROXY_TOKEN), p)


def test_auto_with_the_proxy_token_as_anthropic_key_is_centralized():
    p = provider("anthropic", "auto")
    assert_central(resolve(p, {"x_api_key": PROXY_TOKEN}, PROXY_TOKEN), p)


def test_auto_with_a_different_key_is_byok():
    cred = resolve(provider("openai", "auto"), OPENAI_BEARER, PROXY_TOKEN)
    assert cred.info.kind is CredentialKind.BYOK
    assert cred.value == f"Bearer {USER_KEY}"


def test_auto_with_a_key_but_no_proxy_token_is_byok():
    cred = resolve(provider("anthropic", "auto"), ANTHROPIC_API_KEY, None)
    assert cred.info.kind is CredentialKind.BYOK
    assert (cred.header, cred.value) == ("X-Api-Key", USER_KEY)


@pytest.mark.parametrize("client", [ANTHROPIC_OAUTH, ANTHROPIC_BOTH])
def test_auto_anthropic_subscription_user_keeps_their_sign_in(client):
    cred = resolve(provider("anthropic", "auto"), client, PROXY_TOKEN)
    assert cred.info.kind is CredentialKind.BYOK


def test_auto_without_keys_and_without_credential_is_401():
    with pytest.raises(ResponseError) as info:
        resolve(provider("openai", "auto", keys=False), NONE, PROXY_TOKEN)
    assert info.value.status == 401
    assert info.value.type == "authentication_error"
    assert "no central keys" in info.value.message


def test_auto_without_keys_and_only_the_proxy_token_is_401():
    with pytest.raises(ResponseError) as info:
        resolve(
            provider("openai", "auto", keys=False),
            {"authorization": f"Bearer {PROXY_TOKEN}"},
            PROXY_TOKEN,
        )
    assert info.value.status == 401


# -- no secret in reprs --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "mode", "client", "secret"),
    [
        ("openai", "centralized", NONE, OPENAI_KEY),
        ("anthropic", "centralized", NONE, ANTHROPIC_KEY),
        ("openai", "byok", OPENAI_BEARER, USER_KEY),
        ("anthropic", "byok", ANTHROPIC_OAUTH, OAUTH),
    ],
)
def test_upstream_credential_repr_never_contains_the_secret(name, mode, client, secret):
    cred = resolve(provider(name, mode), client)
    assert secret in cred.value  # it is there, for the wire
    assert secret not in repr(cred)
    assert secret not in str(cred)
    assert secret not in f"{cred!r} {cred}"
    assert cred.header in repr(cred)
    assert cred.info.hint in repr(cred)


def test_byok_never_forwards_the_callers_proxy_token():
    """The proxy token is the bridge's secret: in byok mode it counts as no credential."""
    with pytest.raises(ResponseError) as info:
        resolve(provider("openai", "byok"), {"authorization": f"Bearer {PROXY_TOKEN}"},
                proxy_token=PROXY_TOKEN)
    assert info.value.status == 401
