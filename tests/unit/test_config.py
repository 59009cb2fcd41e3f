"""The TOML configuration: defaults, validation and error messages (design.md, reference §1.2)."""

from pathlib import Path

import pytest

from aibridge.config import MAX_BODY_BYTES, BridgeConfig, ConfigError, load_config
from aibridge.settings import Settings

DESIGN_EXAMPLE = """
[providers.openai]
hosts = ["api.openai.com"]
upstream = "https://api.openai.com"   # optional override
credentials = "centralized"

[providers.anthropic]
hosts = ["api.anthropic.com"]
credentials = "auto"

[auth]
actors_file = "actors.toml"

[recording]
url = "sqlite:///aibridge.db"
"""


def write(tmp_path: Path, text: str, name: str = "aibridge.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def error_of(tmp_path: Path, text: str) -> str:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return str(info.value)


# -- no file ---------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [None, ""])
def test_no_path_gives_defaults_and_cwd(path):
    config, base_dir = load_config(path)
    assert config == BridgeConfig()
    assert config.providers == {}
    assert config.auth.actors_file is None
    assert config.recording.url is None
    assert config.max_body_bytes == MAX_BODY_BYTES == 32 << 20
    assert base_dir == Path.cwd()


# -- valid files -----------------------------------------------------------------------------


def test_design_example_loads_every_field(tmp_path):
    config, base_dir = load_config(write(tmp_path, DESIGN_EXAMPLE))
    assert base_dir == tmp_path.resolve()
    openai = config.providers["openai"]
    assert openai.hosts == ["api.openai.com"]
    assert openai.upstream == "https://api.openai.com"
    assert openai.credentials == "centralized"
    anthropic = config.providers["anthropic"]
    assert anthropic.hosts == ["api.anthropic.com"]
    assert anthropic.credentials == "auto"
    assert config.auth.actors_file == Path("actors.toml")
    assert config.recording.url == "sqlite:///aibridge.db"


def test_every_provider_field_is_accepted(tmp_path):
    config, _ = load_config(
        write(
            tmp_path,
            """
[providers.my-groq]
type = "openai"
enabled = true
hosts = ["API.Groq.com"]
upstream = "http://127.0.0.1:9000/prefix"
base_path = "/openai/v1/"
passthrough = ["/openai/v1/models"]
keys_env = "GROQ_KEYS"
keys_file = "keys/groq.txt"
credentials = "byok"
send_actor_headers = false
workspace_id = "ws-1"
""",
        )
    )
    groq = config.providers["my-groq"]
    assert groq.type == "openai"
    assert groq.enabled is True
    assert groq.hosts == ["api.groq.com"]
    assert groq.upstream == "http://127.0.0.1:9000/prefix"
    assert groq.base_path == "/openai/v1"  # trailing slash trimmed
    assert groq.passthrough == ["/openai/v1/models"]
    assert groq.keys_env == "GROQ_KEYS"
    assert groq.keys_file == Path("keys/groq.txt")
    assert groq.credentials == "byok"
    assert groq.send_actor_headers is False
    assert groq.workspace_id == "ws-1"


def test_max_body_bytes_can_be_set(tmp_path):
    config, _ = load_config(write(tmp_path, "max_body_bytes = 1048576\n"))
    assert config.max_body_bytes == 1 << 20


def test_max_body_bytes_must_be_positive(tmp_path):
    assert "max_body_bytes" in error_of(tmp_path, "max_body_bytes = 0\n")


def test_relative_paths_are_kept_for_later_resolution(tmp_path):
    config, base_dir = load_config(
        write(
            tmp_path,
            """
[auth]
actors_file = "actors.toml"
[providers.openai]
keys_file = "secrets/openai.keys"
""",
        )
    )
    assert config.auth.actors_file == Path("actors.toml")
    assert not config.auth.actors_file.is_absolute()
    assert config.providers["openai"].keys_file == Path("secrets/openai.keys")
    assert base_dir == tmp_path.resolve()


def test_base_dir_is_the_config_files_directory_whatever_the_cwd(tmp_path, monkeypatch):
    (tmp_path / "conf").mkdir()
    write(tmp_path / "conf", "")
    monkeypatch.chdir(tmp_path)
    _, base_dir = load_config("conf/aibridge.toml")
    assert base_dir == (tmp_path / "conf").resolve()


def test_settings_resolve_relative_actors_file_against_config_dir(tmp_path, monkeypatch):
    for name in ("AIBRIDGE_OPENAI_KEYS", "AIBRIDGE_ANTHROPIC_KEYS"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "conf").mkdir()
    write(tmp_path / "conf", '[[actors]]\nid = "alice"\ntoken = "t"\n', "actors.toml")
    path = write(tmp_path / "conf", '[auth]\nactors_file = "actors.toml"\n')
    monkeypatch.chdir(tmp_path)
    settings = Settings.load(str(path))
    assert settings.actors.source == (tmp_path / "conf" / "actors.toml").resolve()
    assert settings.actors.authenticate("t").id == "alice"


def test_empty_file_gives_defaults(tmp_path):
    config, _ = load_config(write(tmp_path, ""))
    assert config == BridgeConfig()


# -- unknown keys ------------------------------------------------------------------------------


def test_unknown_provider_key_is_rejected_naming_the_field(tmp_path):
    message = error_of(tmp_path, '[providers.openai]\nhost = ["api.openai.com"]\n')
    assert "providers.openai.host" in message
    assert "Extra inputs are not permitted" in message
    assert "aibridge.toml" in message


def test_unknown_top_level_key_is_rejected_naming_the_field(tmp_path):
    message = error_of(tmp_path, "providrs = 1\n")
    assert "providrs" in message
    assert "not permitted" in message


def test_unknown_section_key_is_rejected_naming_the_field(tmp_path):
    assert "auth.actor_file" in error_of(tmp_path, '[auth]\nactor_file = "a.toml"\n')
    assert "recording.uri" in error_of(tmp_path, '[recording]\nuri = "sqlite:///x"\n')


# -- credentials -------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["centralized", "byok", "auto"])
def test_credentials_modes_accepted(tmp_path, mode):
    config, _ = load_config(write(tmp_path, f'[providers.openai]\ncredentials = "{mode}"\n'))
    assert config.providers["openai"].credentials == mode


def test_bad_credentials_value_lists_the_choices(tmp_path):
    message = error_of(tmp_path, '[providers.openai]\ncredentials = "central"\n')
    assert "providers.openai.credentials" in message
    for mode in ("centralized", "byok", "auto"):
        assert mode in message


# -- provider names (reference §1.2: ^[a-z0-9]+(-[a-z0-9]+)*$) -------------------------------


@pytest.mark.parametrize("name", ["groq", "a", "a1", "my-groq", "a-b-c", "0", "x-1-y"])
def test_valid_provider_names(tmp_path, name):
    config, _ = load_config(write(tmp_path, f'[providers."{name}"]\ntype = "openai"\n'))
    assert name in config.providers


@pytest.mark.parametrize(
    "name", ["", "-a", "a-", "a--b", "Groq", "my_groq", "a.b", "a b", "grøq", "a/b"]
)
def test_invalid_provider_names_are_rejected(tmp_path, name):
    message = error_of(tmp_path, f'[providers."{name}"]\ntype = "openai"\n')
    assert f"provider name {name!r}" in message
    assert "^[a-z0-9]+(-[a-z0-9]+)*$" in message


def test_provider_name_with_trailing_newline_is_rejected(tmp_path):
    message = error_of(tmp_path, '[providers."groq\\n"]\ntype = "openai"\n')
    assert "provider name" in message


def test_custom_provider_without_type_is_rejected(tmp_path):
    message = error_of(tmp_path, '[providers.groq]\nhosts = ["api.groq.com"]\n')
    assert "provider 'groq'" in message
    assert 'type = "openai" or "anthropic"' in message


def test_builtin_providers_need_no_type(tmp_path):
    config, _ = load_config(write(tmp_path, "[providers.openai]\n[providers.anthropic]\n"))
    assert config.providers["openai"].type is None
    assert config.providers["anthropic"].type is None


def test_malformed_provider_type_is_rejected(tmp_path):
    message = error_of(tmp_path, '[providers.groq]\ntype = "Open AI"\nhosts = ["x.example"]\n')
    assert "providers.groq.type" in message


def test_unknown_provider_type_is_rejected_naming_the_known_ones(tmp_path):
    # The types are the catalog's (providers.catalog): the registry refuses any other.
    from aibridge.providers.registry import build_registry

    config, base = load_config(
        write(tmp_path, '[providers.groq]\ntype = "bogus"\nhosts = ["x.example"]\n'))
    with pytest.raises(ConfigError) as info:
        build_registry(config, base, environ={})
    assert "unknown type 'bogus'" in str(info.value)
    assert "gemini" in str(info.value) and "openai" in str(info.value)


@pytest.mark.parametrize("kind", ["gemini", "azure", "copilot"])
def test_the_new_provider_types_are_known(tmp_path, kind):
    from aibridge.providers.registry import build_registry

    config, base = load_config(write(
        tmp_path, f'[providers.x]\ntype = "{kind}"\nhosts = ["x.example"]\n'))
    assert build_registry(config, base, environ={}).for_host("x.example").type == kind


@pytest.mark.parametrize("host", ["*", "*.com", "api.*", "a*.example.com", "*.*", "a..b.com"])
def test_wildcards_stand_for_whole_labels_left_of_the_domain(tmp_path, host):
    message = error_of(tmp_path, f'[providers.openai]\nhosts = ["{host}"]\n')
    assert "providers.openai.hosts" in message


def test_wildcard_hosts_are_accepted(tmp_path):
    config, _ = load_config(write(
        tmp_path, '[providers.openai]\nhosts = ["*.OpenAI.azure.com", "bedrock.*.aws.com"]\n'))
    assert config.providers["openai"].hosts == ["*.openai.azure.com", "bedrock.*.aws.com"]


# -- hosts ----------------------------------------------------------------------------------


def test_hosts_are_lower_cased_trimmed_and_lose_the_trailing_dot(tmp_path):
    config, _ = load_config(
        write(tmp_path, '[providers.openai]\nhosts = [" API.OpenAI.com. ", "Eu.OpenAI.com"]\n')
    )
    assert config.providers["openai"].hosts == ["api.openai.com", "eu.openai.com"]


@pytest.mark.parametrize(
    "host",
    [
        "https://api.openai.com",
        "api.openai.com:443",
        "api.openai.com/v1",
        "",
        "   ",
        ".",
    ],
)
def test_bad_hosts_are_rejected(tmp_path, host):
    message = error_of(tmp_path, f'[providers.openai]\nhosts = ["{host}"]\n')
    assert "providers.openai.hosts" in message
    assert "no scheme, port or path" in message


def test_empty_hosts_list_is_rejected(tmp_path):
    assert "providers.openai.hosts" in error_of(tmp_path, "[providers.openai]\nhosts = []\n")


# -- upstream --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    ["https://api.openai.com", "http://127.0.0.1:8080", "https://egress.corp/openai/"],
)
def test_upstream_accepts_http_and_https_urls(tmp_path, url):
    config, _ = load_config(write(tmp_path, f'[providers.openai]\nupstream = "{url}"\n'))
    assert config.providers["openai"].upstream == url


@pytest.mark.parametrize(
    "url", ["api.openai.com", "ftp://api.openai.com", "https://", "https:///v1", "//host", ""]
)
def test_upstream_must_be_an_http_url(tmp_path, url):
    message = error_of(tmp_path, f'[providers.openai]\nupstream = "{url}"\n')
    assert "providers.openai.upstream" in message
    assert "http:// or https:// URL" in message


def test_base_path_must_start_with_slash(tmp_path):
    message = error_of(tmp_path, '[providers.openai]\nbase_path = "v1"\n')
    assert "providers.openai.base_path" in message
    assert "must start with '/'" in message


# -- unusable files ------------------------------------------------------------------------------


def test_invalid_toml_names_the_file_and_the_problem(tmp_path):
    message = error_of(tmp_path, "[providers.openai\n")
    assert "is not valid TOML" in message
    assert str(tmp_path / "aibridge.toml") in message
    assert "line 1" in message


def test_wrong_value_type_is_rejected_naming_the_field(tmp_path):
    message = error_of(tmp_path, '[providers.openai]\nsend_actor_headers = "maybe"\n')
    assert "providers.openai.send_actor_headers" in message


def test_missing_file_names_the_path_and_the_reason(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "nope.toml")
    assert str(tmp_path / "nope.toml") in str(info.value)
    assert "cannot read config" in str(info.value)
    assert "No such file or directory" in str(info.value)


def test_directory_instead_of_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path)


def test_tilde_is_expanded(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    write(tmp_path, "")
    _, base_dir = load_config("~/aibridge.toml")
    assert base_dir == tmp_path.resolve()


def test_non_utf8_file_is_a_config_error(tmp_path):
    path = tmp_path / "aibridge.toml"
    path.write_bytes(b'[recording]\nurl = "caf\xe9"\n')
    with pytest.raises(ConfigError, match=r"aibridge\.toml"):
        load_config(path)
