"""Provider registry: hosts, upstreams, keys, credentials mode and route matching."""

from pathlib import Path

import pytest

from aibridge.config import BridgeConfig, ConfigError
from aibridge.providers import (
    BRIDGED,
    DENIED,
    INVALID,
    PASSTHROUGH,
    UNKNOWN,
    UNTOUCHED,
    RouteMatch,
    Upstream,
    build_registry,
)
from aibridge.providers.anthropic_messages import ANTHROPIC, MESSAGES
from aibridge.providers.openai import OPENAI
from aibridge.providers.openai_chat import CHAT_COMPLETIONS
from aibridge.providers.openai_embeddings import EMBEDDINGS
from aibridge.providers.openai_responses import RESPONSES


def registry(
    providers: dict | None = None,
    environ: dict | None = None,
    base_dir: Path = Path("/nonexistent"),
):
    config = BridgeConfig.model_validate({"providers": providers or {}})
    return build_registry(config, base_dir, environ={} if environ is None else environ)


def build_error(
    providers: dict | None = None,
    environ: dict | None = None,
    base_dir: Path = Path("/nonexistent"),
) -> str:
    with pytest.raises(ConfigError) as info:
        registry(providers, environ, base_dir)
    return str(info.value)


def secrets(provider) -> list[str]:
    return [k.secret for k in provider.pool.keys]


GROQ = {"type": "openai", "hosts": ["api.groq.com"], "base_path": "/openai/v1"}


# -- defaults ------------------------------------------------------------------------------------


def test_defaults_have_openai_anthropic_chatgpt_and_gemini():
    reg = registry()
    assert [p.name for p in reg.providers] == ["openai", "anthropic", "chatgpt", "gemini"]
    assert set(reg.by_host) == {"api.openai.com", "api.anthropic.com", "chatgpt.com",
                                "generativelanguage.googleapis.com"}
    # Azure OpenAI and GitHub Copilot are built in but opt-in.
    assert reg.for_host("myres.openai.azure.com") is None
    assert reg.for_host("api.githubcopilot.com") is None


def test_default_openai_provider():
    openai = registry().for_host("api.openai.com")
    assert openai.name == "openai"
    assert openai.type == "openai"
    assert openai.api is OPENAI
    assert openai.hosts == ("api.openai.com",)
    assert openai.upstream == Upstream("https", "api.openai.com", 443, "")
    assert str(openai.upstream) == "https://api.openai.com:443"
    assert openai.base_path == "/v1"
    assert openai.send_actor_headers is True
    assert openai.workspace_id is None


def test_default_anthropic_provider():
    anthropic = registry().for_host("api.anthropic.com")
    assert anthropic.api is ANTHROPIC
    assert str(anthropic.upstream) == "https://api.anthropic.com:443"
    assert anthropic.passthrough == ("/v1/", "/api/")


def test_without_keys_credentials_default_to_byok():
    for provider in registry().providers:
        assert provider.credentials == "byok"
        assert provider.pool is None


def test_with_keys_credentials_default_to_centralized():
    reg = registry(environ={"AIBRIDGE_OPENAI_KEYS": "sk-1", "AIBRIDGE_ANTHROPIC_KEYS": "sk-a"})
    assert reg.for_host("api.openai.com").credentials == "centralized"
    assert secrets(reg.for_host("api.openai.com")) == ["sk-1"]
    assert reg.for_host("api.anthropic.com").credentials == "centralized"
    assert secrets(reg.for_host("api.anthropic.com")) == ["sk-a"]


def test_explicit_credentials_mode_wins_over_the_default():
    reg = registry({"openai": {"credentials": "auto"}}, {"AIBRIDGE_OPENAI_KEYS": "sk-1"})
    assert reg.for_host("api.openai.com").credentials == "auto"


def test_overriding_a_builtin_keeps_its_default_host():
    reg = registry({"openai": {"upstream": "http://127.0.0.1:9000"}})
    assert reg.for_host("api.openai.com").upstream == Upstream("http", "127.0.0.1", 9000, "")


# -- keys ----------------------------------------------------------------------------------------


def test_env_keys_are_comma_separated_in_priority_order():
    reg = registry(environ={"AIBRIDGE_OPENAI_KEYS": "sk-1,sk-2,sk-3"})
    assert secrets(reg.for_host("api.openai.com")) == ["sk-1", "sk-2", "sk-3"]


def test_env_keys_ignore_whitespace_and_empty_items():
    reg = registry(environ={"AIBRIDGE_OPENAI_KEYS": " sk-1 ,, sk-2,\t, \n,sk-3 ,"})
    assert secrets(reg.for_host("api.openai.com")) == ["sk-1", "sk-2", "sk-3"]


@pytest.mark.parametrize("value", ["", " ", ",", " , ,"])
def test_env_with_only_separators_means_no_keys(value):
    provider = registry(environ={"AIBRIDGE_OPENAI_KEYS": value}).for_host("api.openai.com")
    assert provider.pool is None
    assert provider.credentials == "byok"


def test_custom_keys_env_name():
    reg = registry(
        {"openai": {"keys_env": "MY_OPENAI"}},
        {"MY_OPENAI": "sk-mine", "AIBRIDGE_OPENAI_KEYS": "sk-default"},
    )
    assert secrets(reg.for_host("api.openai.com")) == ["sk-mine"]


def test_custom_provider_default_keys_env_uses_upper_case_and_underscores():
    reg = registry({"my-groq": GROQ}, {"AIBRIDGE_MY_GROQ_KEYS": "gsk-1,gsk-2"})
    assert secrets(reg.for_host("api.groq.com")) == ["gsk-1", "gsk-2"]


def test_keys_file_skips_comments_and_blank_lines_relative_to_base_dir(tmp_path):
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "openai.txt").write_text(
        "# production keys\n\nsk-1\n   # indented comment\n  sk-2  \n\n", encoding="utf-8"
    )
    reg = registry({"openai": {"keys_file": "keys/openai.txt"}}, base_dir=tmp_path)
    assert secrets(reg.for_host("api.openai.com")) == ["sk-1", "sk-2"]
    assert reg.for_host("api.openai.com").credentials == "centralized"


def test_keys_file_absolute_path_ignores_base_dir(tmp_path):
    path = tmp_path / "k.txt"
    path.write_text("sk-abs\n", encoding="utf-8")
    reg = registry({"anthropic": {"keys_file": str(path)}}, base_dir=Path("/elsewhere"))
    assert secrets(reg.for_host("api.anthropic.com")) == ["sk-abs"]


def test_env_keys_come_before_file_keys(tmp_path):
    (tmp_path / "k.txt").write_text("sk-file\n", encoding="utf-8")
    reg = registry(
        {"openai": {"keys_file": "k.txt"}}, {"AIBRIDGE_OPENAI_KEYS": "sk-env"}, base_dir=tmp_path
    )
    assert secrets(reg.for_host("api.openai.com")) == ["sk-env", "sk-file"]


def test_unreadable_keys_file_names_provider_and_path(tmp_path):
    message = build_error({"openai": {"keys_file": "missing.txt"}}, base_dir=tmp_path)
    assert "provider 'openai'" in message
    assert str(tmp_path / "missing.txt") in message
    assert "No such file or directory" in message


def test_duplicate_keys_are_rejected_without_echoing_them():
    message = build_error(environ={"AIBRIDGE_OPENAI_KEYS": "sk-dup-secret,sk-2,sk-dup-secret"})
    assert "provider 'openai'" in message
    assert "duplicate key" in message
    assert "sk-dup-secret" not in message


def test_duplicate_across_env_and_file_is_rejected(tmp_path):
    (tmp_path / "k.txt").write_text("sk-1\n", encoding="utf-8")
    message = build_error(
        {"openai": {"keys_file": "k.txt"}}, {"AIBRIDGE_OPENAI_KEYS": "sk-1"}, base_dir=tmp_path
    )
    assert "duplicate key" in message


def test_centralized_without_keys_names_the_env_var():
    message = build_error({"openai": {"credentials": "centralized"}})
    assert "provider 'openai'" in message
    assert 'credentials = "centralized" but no keys' in message
    assert "AIBRIDGE_OPENAI_KEYS" in message
    assert "keys_file" in message


def test_centralized_without_keys_names_the_custom_env_var():
    message = build_error({"my-groq": GROQ | {"credentials": "centralized"}})
    assert "AIBRIDGE_MY_GROQ_KEYS" in message
    message = build_error({"openai": {"credentials": "centralized", "keys_env": "CORP_KEYS"}})
    assert "CORP_KEYS" in message


def test_auto_without_keys_is_allowed():
    provider = registry({"anthropic": {"credentials": "auto"}}).for_host("api.anthropic.com")
    assert provider.credentials == "auto"
    assert provider.pool is None


# -- hosts -------------------------------------------------------------------------------------


def test_duplicate_host_across_providers_is_rejected():
    message = build_error({"corp": {"type": "openai", "hosts": ["api.openai.com"]}})
    assert "host 'api.openai.com' is claimed by providers 'openai' and 'corp'" in message


def test_disabled_provider_is_not_decrypted():
    reg = registry({"openai": {"enabled": False}})
    assert reg.for_host("api.openai.com") is None
    assert [p.name for p in reg.providers] == ["anthropic", "chatgpt", "gemini"]


def test_disabled_provider_frees_its_host_for_another():
    reg = registry(
        {"openai": {"enabled": False}, "corp": {"type": "openai", "hosts": ["api.openai.com"]}}
    )
    assert reg.for_host("api.openai.com").name == "corp"


def test_disabled_provider_does_not_need_its_keys():
    reg = registry({"openai": {"enabled": False, "credentials": "centralized"}})
    assert reg.for_host("api.openai.com") is None


def test_provider_with_several_hosts():
    reg = registry({"openai": {"hosts": ["api.openai.com", "eu.api.openai.com"]}})
    assert reg.for_host("eu.api.openai.com") is reg.for_host("api.openai.com")
    # The upstream defaults to the first host.
    assert reg.for_host("eu.api.openai.com").upstream.host == "api.openai.com"


@pytest.mark.parametrize(
    "host", ["api.openai.com", "API.OpenAI.COM", "api.openai.com.", "Api.OpenAI.com."]
)
def test_for_host_is_case_insensitive_and_ignores_trailing_dot(host):
    assert registry().for_host(host).name == "openai"


@pytest.mark.parametrize(
    "host", [None, "", "openai.com", "api.openai.com.evil", "xapi.openai.com", "api.openai.com:443"]
)
def test_for_host_unknown(host):
    assert registry().for_host(host) is None


# -- OpenAI-compatible provider with base_path ---------------------------------------------------


@pytest.fixture
def groq():
    return registry({"groq": GROQ}).for_host("api.groq.com")


def test_compatible_provider_reuses_the_provider_api(groq):
    assert groq.api is OPENAI
    assert groq.base_path == "/openai/v1"
    assert groq.upstream == Upstream("https", "api.groq.com", 443, "")
    assert groq.passthrough == ("/openai/v1/",)


def test_compatible_provider_bridges_under_base_path(groq):
    chat = RouteMatch(BRIDGED, CHAT_COMPLETIONS)
    assert groq.match("POST", "/openai/v1/chat/completions") == chat
    assert groq.match("POST", "/openai/v1/responses") == RouteMatch(BRIDGED, RESPONSES)
    assert groq.match("POST", "/openai/v1/chat/completions").route == "chat"


def test_compatible_provider_passes_other_paths_under_base_path(groq):
    assert groq.match("GET", "/openai/v1/models") == RouteMatch(PASSTHROUGH)


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/models", "/openai/v2/x", "/"])
def test_compatible_provider_outside_base_path_is_unknown(groq, path):
    assert groq.match("POST", path) == RouteMatch(UNKNOWN)


def test_custom_passthrough_list_replaces_the_default():
    provider = registry({"groq": GROQ | {"passthrough": ["/openai/v1/models"]}}).for_host(
        "api.groq.com"
    )
    assert provider.match("GET", "/openai/v1/models") == RouteMatch(PASSTHROUGH)
    assert provider.match("GET", "/openai/v1/files") == RouteMatch(UNKNOWN)
    chat = RouteMatch(BRIDGED, CHAT_COMPLETIONS)
    assert provider.match("POST", "/openai/v1/chat/completions") == chat


def test_anthropic_compatible_provider():
    provider = registry(
        {"kimi": {"type": "anthropic", "hosts": ["api.moonshot.ai"], "base_path": "/anthropic/v1"}}
    ).for_host("api.moonshot.ai")
    assert provider.api is ANTHROPIC
    assert provider.match("POST", "/anthropic/v1/messages") == RouteMatch(BRIDGED, MESSAGES)
    assert provider.passthrough == ("/anthropic/v1/", "/api/")


# -- route matching on the built-in providers ----------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        ("POST", "/v1/chat/completions", RouteMatch(BRIDGED, CHAT_COMPLETIONS)),
        ("POST", "/v1/responses", RouteMatch(BRIDGED, RESPONSES)),
        ("POST", "/v1/chat/completions?stream=true", RouteMatch(BRIDGED, CHAT_COMPLETIONS)),
        ("POST", "/v1/responses?x=1&y=2", RouteMatch(BRIDGED, RESPONSES)),
        ("GET", "/v1/chat/completions", RouteMatch(PASSTHROUGH)),
        ("GET", "/v1/responses", RouteMatch(PASSTHROUGH)),  # Codex WebSocket upgrade
        ("GET", "/v1/models", RouteMatch(PASSTHROUGH)),
        ("GET", "/v1/models?limit=1", RouteMatch(PASSTHROUGH)),
        ("POST", "/v1/embeddings", RouteMatch(BRIDGED, EMBEDDINGS)),
        ("GET", "/v1/embeddings", RouteMatch(PASSTHROUGH)),
        ("DELETE", "/v1/files/file-1", RouteMatch(PASSTHROUGH)),
        ("POST", "/v1/responses/resp_1/cancel", RouteMatch(PASSTHROUGH)),
        ("POST", "/v2/x", RouteMatch(UNKNOWN)),
        ("GET", "/", RouteMatch(UNKNOWN)),
        ("GET", "/v1", RouteMatch(UNKNOWN)),
        ("POST", "/chat/completions", RouteMatch(UNKNOWN)),
        ("GET", "/api/claude_code/settings", RouteMatch(UNKNOWN)),  # Anthropic-only side path
    ],
)
def test_openai_routes(method, path, expected):
    assert registry().for_host("api.openai.com").match(method, path) == expected


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        ("POST", "/v1/messages", RouteMatch(BRIDGED, MESSAGES)),
        ("POST", "/v1/messages?beta=true", RouteMatch(BRIDGED, MESSAGES)),
        ("GET", "/v1/messages", RouteMatch(PASSTHROUGH)),
        ("POST", "/v1/messages/count_tokens", RouteMatch(PASSTHROUGH)),
        ("POST", "/v1/messages/count_tokens?beta=true", RouteMatch(PASSTHROUGH)),
        ("POST", "/v1/messages/batches", RouteMatch(PASSTHROUGH)),
        ("GET", "/v1/models", RouteMatch(PASSTHROUGH)),
        ("GET", "/api/claude_code/settings", RouteMatch(PASSTHROUGH)),
        ("POST", "/api/event_logging/batch", RouteMatch(PASSTHROUGH)),
        ("POST", "/v1/chat/completions", RouteMatch(PASSTHROUGH)),  # not a bridged route here
        ("POST", "/v2/x", RouteMatch(UNKNOWN)),
        ("GET", "/", RouteMatch(UNKNOWN)),
        ("GET", "/apix", RouteMatch(UNKNOWN)),
    ],
)
def test_anthropic_routes(method, path, expected):
    assert registry().for_host("api.anthropic.com").match(method, path) == expected


# -- Upstream.parse ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://api.openai.com", Upstream("https", "api.openai.com", 443, "")),
        ("https://api.openai.com/", Upstream("https", "api.openai.com", 443, "")),
        ("http://api.openai.com", Upstream("http", "api.openai.com", 80, "")),
        ("http://127.0.0.1:8080", Upstream("http", "127.0.0.1", 8080, "")),
        ("https://egress.corp:8443/openai/", Upstream("https", "egress.corp", 8443, "/openai")),
        ("https://egress.corp/a/b", Upstream("https", "egress.corp", 443, "/a/b")),
        ("https://API.Example.COM", Upstream("https", "api.example.com", 443, "")),
    ],
)
def test_upstream_parse(url, expected):
    assert Upstream.parse(url) == expected


def test_upstream_str_always_shows_the_port():
    assert str(Upstream.parse("https://egress.corp/openai")) == "https://egress.corp:443/openai"
    assert str(Upstream.parse("http://127.0.0.1:8080")) == "http://127.0.0.1:8080"


@pytest.mark.parametrize(
    "url", ["ftp://api.openai.com", "api.openai.com", "https://", "https:///v1", "", "//host"]
)
def test_upstream_parse_rejects_bad_urls(url):
    with pytest.raises(ConfigError, match="must be an http\\(s\\) URL with a host"):
        Upstream.parse(url)


@pytest.mark.parametrize("url", ["https://host:abc", "http://127.0.0.1:99999"])
def test_upstream_parse_rejects_bad_ports_with_config_error(url):
    with pytest.raises(ConfigError):
        Upstream.parse(url)


def test_chatgpt_bridges_codex_responses_and_leaves_the_rest_untouched():
    reg = build_registry(BridgeConfig(), Path("/nonexistent"), environ={})
    chatgpt = reg.for_host("chatgpt.com")
    assert chatgpt is not None and chatgpt.credentials == "byok"
    assert chatgpt.match("POST", "/backend-api/codex/responses") == RouteMatch(BRIDGED, RESPONSES)
    assert chatgpt.match("GET", "/backend-api/codex/models").kind == PASSTHROUGH
    assert chatgpt.match("GET", "/backend-api/conversations").kind == UNTOUCHED
    assert chatgpt.websocket_api("/backend-api/codex/responses") is RESPONSES
    assert chatgpt.websocket_api("/backend-api/codex/models") is None


def test_user_table_overrides_single_fields_of_a_builtin():
    config = BridgeConfig.model_validate({"providers": {"chatgpt": {"upstream": "http://127.0.0.1:9"}}})
    chatgpt = build_registry(config, Path("/nonexistent"), environ={}).for_host("chatgpt.com")
    assert chatgpt.upstream.port == 9
    assert chatgpt.base_path == "/backend-api/codex"


# -- normal form, deny lists and narrowed passthrough ------------------------------------------


@pytest.mark.parametrize(
    "target",
    [
        "/v1/chat/completions/",
        "/v1/chat/completions;x",
        "/v1/./chat/completions",
        "/v1/chat%2fcompletions",
        "/v1/chat%2Fcompletions",
        "//v1//chat///completions//",
        "/v1/x/../chat/completions",
        "/v1;p=1/chat/completions",
        "/v1/chat/complet%69ons",
    ],
)
def test_variants_of_a_bridged_route_are_that_route_in_normal_form(target):
    match = registry().for_host("api.openai.com").match("POST", target)
    assert match == RouteMatch(BRIDGED, CHAT_COMPLETIONS)
    assert match.target == "/v1/chat/completions"


def test_the_query_is_kept_as_sent_and_ignored_by_routing():
    match = registry().for_host("api.anthropic.com").match("POST", "/v1/messages/?beta=true&a=%2f")
    assert match == RouteMatch(BRIDGED, MESSAGES)
    assert match.target == "/v1/messages?beta=true&a=%2f"


@pytest.mark.parametrize(
    ("target", "why"),
    [
        ("/v1/../admin", "base path"),
        ("/v1/files/../../admin", "base path"),
        ("/../v1/models", "root"),
        ("/v1/%2e%2e/admin", "escaped dot segment"),
        ("/v1/.%2E/chat/completions", "escaped dot segment"),
        ("/v1/%2e/chat/completions", "escaped dot segment"),
        ("/v1/chat/completions%00", "%00"),
        ("/v1/chat/completions\x00", "control"),
        ("/v1\\chat/completions", "backslash"),
        ("/v1%5cchat/completions", "%5C"),
        ("/v1/chat/completions%zz", "malformed"),
        ("/v1/models#x", "fragment"),
        ("*", "must start with"),
    ],
)
def test_paths_without_one_safe_reading_are_invalid(target, why):
    match = registry().for_host("api.openai.com").match("POST", target)
    assert match.kind == INVALID
    assert why in match.reason


def test_untouched_routes_keep_the_clients_target():
    chatgpt = registry().for_host("chatgpt.com")
    match = chatgpt.match("GET", "/backend-api/conversations//x/")
    assert match.kind == UNTOUCHED and match.target is None
    # ... but a variant of the bridged Codex route is that route.
    variant = chatgpt.match("POST", "/backend-api/codex/./responses/")
    assert variant == RouteMatch(BRIDGED, RESPONSES)
    assert variant.target == "/backend-api/codex/responses"


def test_deny_list_refuses_paths_and_what_lies_below_them():
    provider = registry({"openai": {"deny": ["/v1/files", "/v1/chat/completions"]}}).for_host(
        "api.openai.com")
    for target in ("/v1/files", "/v1/files/file-1/content", "/v1//files/", "/v1/files;x"):
        match = provider.match("POST", target)
        assert match.kind == DENIED, target
        assert match.reason == "/v1/files"
    assert provider.match("POST", "/v1/chat/completions").kind == DENIED  # bridged ones too
    assert provider.match("GET", "/v1/filesystem").kind == PASSTHROUGH  # a sibling is not below
    assert provider.match("GET", "/v1/models").kind == PASSTHROUGH


def test_passthrough_can_be_narrowed_to_exact_paths():
    provider = registry({"openai": {"passthrough": ["/v1/models"]}}).for_host("api.openai.com")
    assert provider.match("GET", "/v1/models").kind == PASSTHROUGH
    assert provider.match("GET", "/v1/models/gpt-4o").kind == PASSTHROUGH
    assert provider.match("GET", "/v1/models-x").kind == UNKNOWN
    assert provider.match("POST", "/v1/files").kind == UNKNOWN
    assert provider.match("POST", "/v1/embeddings").kind == BRIDGED  # bridged routes stay


def test_passthrough_can_be_switched_off():
    provider = registry({"anthropic": {"passthrough": []}}).for_host("api.anthropic.com")
    assert provider.match("POST", "/v1/messages/count_tokens").kind == UNKNOWN
    assert provider.match("POST", "/v1/messages").kind == BRIDGED


def test_configured_prefixes_are_kept_in_normal_form():
    provider = registry({"openai": {"passthrough": ["/v1//models/"], "deny": ["/v1/./files"]}}
                        ).for_host("api.openai.com")
    assert provider.passthrough == ("/v1/models/",)
    assert provider.deny == ("/v1/files",)


@pytest.mark.parametrize("entry", ["/../x", "/v1/%zz", "/v1/models?x=1"])
def test_a_prefix_without_normal_form_is_a_config_error(entry):
    assert "deny entry" in build_error({"openai": {"deny": [entry]}})


def test_a_prefix_must_start_with_a_slash():
    with pytest.raises(ValueError, match="must start with '/'"):
        BridgeConfig.model_validate({"providers": {"openai": {"deny": ["v1/files"]}}})
