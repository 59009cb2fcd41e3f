"""Actors file, token lookup and proxy credentials (design.md "Actors", reference §9.3)."""

import base64
import getpass
import hashlib
from pathlib import Path

import pytest

from aibridge.access.actors import (
    ActorDirectory,
    load_actors,
    local_user_actor,
    parse_proxy_authorization,
    parse_proxy_credentials,
    token_digest,
)
from aibridge.config import ConfigError
from aibridge.intercept import Actor


def sha(token: str) -> str:
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "actors.toml"
    path.write_text(text, encoding="utf-8")
    return path


def load_error(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as info:
        load_actors(write(tmp_path, text))
    return str(info.value)


def basic(userpass: str) -> str:
    return "Basic " + base64.b64encode(userpass.encode()).decode()


# -- load_actors ---------------------------------------------------------------------------------


def test_no_path_means_no_proxy_auth():
    directory = load_actors(None)
    assert directory.requires_auth is False
    assert directory.by_digest == {}
    assert directory.source is None


def test_plain_token_authenticates(tmp_path):
    path = write(
        tmp_path,
        """
[[actors]]
id = "alice"
token = "alice-token"
metadata = { Username = "alice", Team = "ml" }
""",
    )
    directory = load_actors(path)
    assert directory.requires_auth is True
    assert directory.source == path
    actor = directory.authenticate("alice-token")
    assert actor == Actor("alice", {"Username": "alice", "Team": "ml"})


def test_sha256_token_authenticates_with_the_plain_token(tmp_path):
    directory = load_actors(
        write(
            tmp_path,
            f"""
[[actors]]
id = "bob"
token = "{sha("bob-token")}"
""",
        )
    )
    assert directory.authenticate("bob-token").id == "bob"
    assert directory.authenticate(sha("bob-token")) is None  # the hash itself is not a token


def test_sha256_token_accepts_upper_case_hex(tmp_path):
    hashed = "sha256:" + hashlib.sha256(b"carol-token").hexdigest().upper()
    directory = load_actors(write(tmp_path, f'[[actors]]\nid = "carol"\ntoken = "{hashed}"\n'))
    assert directory.authenticate("carol-token").id == "carol"


def test_several_actors_each_get_their_own_token(tmp_path):
    directory = load_actors(
        write(
            tmp_path,
            f"""
[[actors]]
id = "alice"
token = "t-alice"
[[actors]]
id = "bob"
token = "{sha("t-bob")}"
""",
        )
    )
    assert directory.authenticate("t-alice").id == "alice"
    assert directory.authenticate("t-bob").id == "bob"
    assert len(directory.by_digest) == 2


def test_directory_is_keyed_by_digest_not_by_plain_token(tmp_path):
    directory = load_actors(write(tmp_path, '[[actors]]\nid = "a"\ntoken = "secret-t"\n'))
    assert list(directory.by_digest) == [token_digest("secret-t")]


def test_metadata_is_stringified(tmp_path):
    directory = load_actors(
        write(
            tmp_path,
            """
[[actors]]
id = "alice"
token = "t"
metadata = { Username = "alice", Level = 3, Admin = true, Intern = false, Ratio = 1.5 }
""",
        )
    )
    metadata = dict(directory.authenticate("t").metadata)
    assert metadata == {
        "Username": "alice",
        "Level": "3",
        "Admin": "true",
        "Intern": "false",
        "Ratio": "1.5",
    }
    assert all(isinstance(v, str) for v in metadata.values())


def test_metadata_defaults_to_empty(tmp_path):
    directory = load_actors(write(tmp_path, '[[actors]]\nid = "a"\ntoken = "t"\n'))
    assert dict(directory.authenticate("t").metadata) == {}


def test_nested_metadata_is_rejected(tmp_path):
    message = load_error(
        tmp_path,
        """
[[actors]]
id = "a"
token = "t"
metadata = { Team = { name = "ml" } }
""",
    )
    assert "actors.0.metadata.Team" in message


def test_duplicate_ids_are_rejected(tmp_path):
    message = load_error(
        tmp_path,
        """
[[actors]]
id = "alice"
token = "t1"
[[actors]]
id = "alice"
token = "t2"
""",
    )
    assert "duplicate actor id 'alice'" in message
    assert "actors.toml" in message


def test_duplicate_plain_tokens_are_rejected(tmp_path):
    message = load_error(
        tmp_path,
        """
[[actors]]
id = "alice"
token = "same"
[[actors]]
id = "bob"
token = "same"
""",
    )
    assert "actor 'bob' reuses another's token" in message
    assert "'same'" not in message  # the token is never echoed


def test_plain_and_hashed_forms_of_one_token_are_duplicates(tmp_path):
    message = load_error(
        tmp_path,
        f"""
[[actors]]
id = "alice"
token = "same"
[[actors]]
id = "bob"
token = "{sha("same")}"
""",
    )
    assert "actor 'bob' reuses another's token" in message


def test_empty_file_is_rejected(tmp_path):
    assert "defines no [[actors]]" in load_error(tmp_path, "")


def test_empty_actors_list_is_rejected(tmp_path):
    assert "defines no [[actors]]" in load_error(tmp_path, "actors = []\n")


@pytest.mark.parametrize(
    "token",
    ["sha256:abc", "sha256:" + "g" * 64, "sha256:" + "a" * 63, "sha256:" + "a" * 65, "sha256:"],
)
def test_bad_sha256_hex_is_rejected(tmp_path, token):
    message = load_error(tmp_path, f'[[actors]]\nid = "a"\ntoken = "{token}"\n')
    assert "sha256: tokens need 64 hex digits" in message
    assert "actors.0.token" in message


@pytest.mark.parametrize(
    ("entry", "where"),
    [
        ('id = "a"', "actors.0.token"),
        ('token = "t"', "actors.0.id"),
        ('id = ""\ntoken = "t"', "actors.0.id"),
        ('id = "a"\ntoken = ""', "actors.0.token"),
        ('id = "a"\ntoken = "t"\nrole = "x"', "actors.0.role"),
    ],
)
def test_invalid_entries_name_the_field(tmp_path, entry, where):
    assert where in load_error(tmp_path, f"[[actors]]\n{entry}\n")


def test_unknown_top_level_key_is_rejected(tmp_path):
    assert "actor" in load_error(tmp_path, '[[actor]]\nid = "a"\ntoken = "t"\n')


def test_missing_file_names_the_path(tmp_path):
    path = tmp_path / "missing.toml"
    with pytest.raises(ConfigError) as info:
        load_actors(path)
    assert f"cannot read actors file {path}" in str(info.value)
    assert "No such file or directory" in str(info.value)


def test_invalid_toml_is_a_config_error(tmp_path):
    assert "is not valid TOML" in load_error(tmp_path, "[[actors]\n")


def test_metadata_key_that_is_not_a_header_token_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="metadata key"):
        load_actors(
            write(
                tmp_path,
                """
[[actors]]
id = "a"
token = "t"
metadata = { "User Name" = "alice" }
""",
            )
        )


def test_non_utf8_actors_file_is_a_config_error(tmp_path):
    path = tmp_path / "actors.toml"
    path.write_bytes(b'[[actors]]\nid = "jos\xe9"\ntoken = "t"\n')
    with pytest.raises(ConfigError, match="actors file"):
        load_actors(path)


# -- authenticate ----------------------------------------------------------------------------


@pytest.fixture
def directory(tmp_path) -> ActorDirectory:
    return load_actors(write(tmp_path, '[[actors]]\nid = "alice"\ntoken = "right"\n'))


def test_right_token_gives_the_actor(directory):
    assert directory.authenticate("right").id == "alice"


@pytest.mark.parametrize("token", ["wrong", "Right", "right ", "righ", None, ""])
def test_wrong_missing_or_empty_token_gives_none(directory, token):
    assert directory.authenticate(token) is None


def test_directory_without_file_authenticates_nobody():
    assert load_actors(None).authenticate("anything") is None


# -- local user ----------------------------------------------------------------------------------


def test_local_user_actor_is_the_user_running_the_proxy():
    user = getpass.getuser()
    assert local_user_actor() == Actor(user, {"Username": user})


def test_local_user_actor_falls_back_without_passwd_entry(monkeypatch):
    def no_user() -> str:
        raise KeyError("getpwuid(): uid not found: 12345")

    monkeypatch.setattr(getpass, "getuser", no_user)
    assert local_user_actor() == Actor("local", {"Username": "local"})


# -- parse_proxy_authorization (reference §9.3) --------------------------------------------------


@pytest.mark.parametrize(
    ("value", "token"),
    [
        (basic("anything:tok-123"), "tok-123"),
        (basic("alice:tok:with:colons"), "tok:with:colons"),  # split at the first colon
        (basic("tok-123:"), "tok-123"),  # http://tok-123@host:port
        ("basic " + base64.b64encode(b"u:tok").decode(), "tok"),
        ("BASIC " + base64.b64encode(b"u:tok").decode(), "tok"),
        ("  Basic    " + base64.b64encode(b"u:tok").decode() + "  ", "tok"),
    ],
)
def test_proxy_authorization_yields_the_token(value, token):
    assert parse_proxy_authorization(value) == token


def test_proxy_authorization_without_colon_takes_the_whole_value_as_token():
    # Deliberate difference from the reference (which answers 407): the token@ form.
    assert parse_proxy_authorization(basic("tok-123")) == "tok-123"


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "   ",
        "Basic",
        "Basic ",
        "Basic not-valid-base64!",
        "Basic dXNlcjp0b2s",  # missing padding
        "Bearer " + base64.b64encode(b"u:tok").decode(),
        "Digest username=u",
        "Basicdx " + base64.b64encode(b"u:tok").decode(),
        basic(":"),  # empty user and token
        basic(""),
        "Basic " + base64.b64encode(b"u:\xff\xfe").decode(),  # not UTF-8
    ],
)
def test_unusable_proxy_authorization_yields_none(value):
    assert parse_proxy_authorization(value) is None


@pytest.mark.parametrize(
    ("value", "credentials"),
    [
        (basic("alice:tok-123"), ("alice", "tok-123")),
        (basic("tok-123"), ("", "tok-123")),  # the token alone is never taken as a user name
        (basic("tok-123:"), ("", "tok-123")),
        (basic(":tok-123"), ("", "tok-123")),
        (None, ("", None)),
        ("Bearer x", ("", None)),
    ],
)
def test_proxy_credentials_give_the_user_name_apart_from_the_token(value, credentials):
    assert parse_proxy_credentials(value) == credentials


# -- a missing actors file ----------------------------------------------------------------------


def test_a_missing_actors_file_is_an_error_unless_told_to_deny(tmp_path):
    path = tmp_path / "gone.toml"
    with pytest.raises(ConfigError, match="cannot read actors file"):
        load_actors(path)
    directory = load_actors(path, deny_if_missing=True)
    assert directory.missing and directory.requires_auth and directory.source == path
    assert directory.authenticate("anything") is None
    present = load_actors(write(tmp_path, '[[actors]]\nid = "a"\ntoken = "t"\n'),
                          deny_if_missing=True)
    assert not present.missing and present.authenticate("t") == Actor("a")
