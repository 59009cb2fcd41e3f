"""Credential description and masking (reference §4.1, §4.3); interceptions never carry secrets."""

import dataclasses
import json

import pytest

from aibridge.intercept import (
    FAILOVER_KEY_HINT,
    Actor,
    CredentialInfo,
    CredentialKind,
    Interception,
    Interceptor,
    mask_secret,
    new_credential_info,
)

SECRET = "sk-ant-api03-abcdefghijklmnopqrstuvwxyz0123456789"


@pytest.mark.parametrize(
    ("secret", "masked"),
    [
        ("", ""),
        ("x", "..."),
        ("ab", "..."),
        ("abcd", "..."),
        ("short", "s...t"),
        ("veryshort", "v...t"),
        ("thisisquitelong", "th...ng"),
        ("sk-ant-api03-abcdefgh", "sk-a...efgh"),
        ("hélloworld🌍!", "hé...🌍!"),
        ("ghp_ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefgh", "ghp_...efgh"),
    ],
)
def test_mask_secret_vectors(secret, masked):
    assert mask_secret(secret) == masked


def test_kind_values_match_the_database_enum():
    assert [str(k) for k in CredentialKind] == ["centralized", "byok"]
    assert CredentialKind("byok") is CredentialKind.BYOK


def test_new_credential_info_masks_and_measures_in_code_points():
    info = new_credential_info(CredentialKind.BYOK, "hélloworld🌍!", "Authorization")
    assert info == CredentialInfo(CredentialKind.BYOK, "hé...🌍!", 12, "Authorization")
    assert new_credential_info("centralized", "sk-x").kind is CredentialKind.CENTRALIZED
    assert new_credential_info(CredentialKind.CENTRALIZED, "sk-x").auth_header == ""


def test_credential_info_never_holds_the_secret():
    info = new_credential_info(CredentialKind.CENTRALIZED, SECRET, "X-Api-Key")
    assert {f.name for f in dataclasses.fields(info)} == {"kind", "hint", "length", "auth_header"}
    assert SECRET not in repr(info)
    assert SECRET not in str(info)
    assert SECRET not in json.dumps(info.to_dict())
    assert info.to_dict() == {
        "kind": "centralized",
        "hint": "sk-a...6789",
        "length": len(SECRET),
        "auth_header": "X-Api-Key",
    }
    with pytest.raises(dataclasses.FrozenInstanceError):
        info.hint = SECRET  # type: ignore[misc]


def test_failover_placeholder_fits_the_hint_column():
    assert FAILOVER_KEY_HINT == "<failover key>"
    assert len(FAILOVER_KEY_HINT) <= 15


def _interception(**overrides) -> Interception:
    values = {
        "provider": "anthropic",
        "provider_type": "anthropic",
        "route": "/v1/messages",
        "model": "claude-sonnet-4-5",
        "streaming": True,
        "actor": Actor("user-123", {"Username": "alice"}),
        "credential": new_credential_info(CredentialKind.BYOK, SECRET, "X-Api-Key"),
    }
    return Interception(**(values | overrides))


def test_interception_implements_the_protocol():
    interception = _interception(correlating_tool_call_id="toolu_1")
    assert isinstance(interception, Interceptor)
    assert interception.correlating_tool_call_id == "toolu_1"
    assert interception.id != _interception().id  # a fresh UUID each time


def test_trace_attributes_are_plain_and_secret_free():
    interception = _interception()
    attributes = interception.trace_attributes()
    assert attributes == {
        "interception_id": interception.id,
        "provider": "anthropic",
        "route": "/v1/messages",
        "model": "claude-sonnet-4-5",
        "streaming": True,
        "user_id": "user-123",
        "credential_kind": "byok",
        "credential_hint": "sk-a...6789",
    }
    assert all(isinstance(v, str | int | bool) for v in attributes.values())
    assert SECRET not in repr(attributes)


def test_to_dict_is_json_and_secret_free():
    interception = _interception()
    data = json.loads(json.dumps(interception.to_dict()))
    assert data["id"] == interception.id
    assert data["provider_type"] == "anthropic"
    assert data["actor"] == {"id": "user-123", "metadata": {"Username": "alice"}}
    assert data["credential"]["hint"] == "sk-a...6789"
    assert data["correlating_tool_call_id"] is None
    assert data["started_at"] == interception.started_at
    assert SECRET not in json.dumps(data)
    assert SECRET not in repr(interception)


def test_interception_ids_are_time_ordered_version_7_uuids():
    import time
    import uuid

    from aibridge.ids import new_id

    before = time.time_ns() // 1_000_000
    ids = [new_id() for _ in range(2000)]
    after = time.time_ns() // 1_000_000
    assert len(set(ids)) == len(ids)
    for i in ids:
        parsed = uuid.UUID(i)
        assert str(parsed) == i
        assert parsed.version == 7 and parsed.variant == uuid.RFC_4122
        assert before <= parsed.int >> 80 <= after  # the leading 48 bits: Unix milliseconds
    # ids of different milliseconds sort by time (what keeps index inserts at the end)
    later = new_id() if (time.sleep(0.002) or True) else ""
    assert all(later > i for i in ids)
    # the random parts are random: every variant value and every hex digit of the tail appear
    assert {i[19] for i in ids} == set("89ab")
    assert {i[-1] for i in ids} == set("0123456789abcdef")
    assert {i[15] for i in ids} == set("0123456789abcdef")
