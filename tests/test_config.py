"""Config validation: every error names the field path; nothing is silently ignored."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from threads_exporter.config import QUOTA_GROUPS, ConfigError, load_config, parse_config

REPO = Path(__file__).resolve().parent.parent


def minimal(**account: object) -> dict:
    return {"accounts": [{"name": "brand", "access_token": "tok", **account}]}


def error_of(data: object, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(data, env or {})
    return str(info.value)


def test_defaults_follow_the_contract():
    config = parse_config(minimal(), {})
    assert config.api.base_url == "https://graph.threads.net"
    assert config.api.version == "v1.0"
    assert config.api.timeout_seconds == 5
    assert config.api.max_concurrency == 16
    assert config.cache_ttl_seconds == 60
    assert config.containers.poll_interval_seconds == 60
    assert config.containers.retention_seconds == 48 * 3600
    account = config.accounts[0]
    assert (account.name, account.user_id, account.quotas) == ("brand", "me", QUOTA_GROUPS)


def test_example_config_is_valid(tmp_path):
    env = {"THREADS_BRAND_TOKEN": "a", "THREADS_EXPORTER_API_TOKEN": "b"}
    text = (REPO / "config.example.yaml").read_text()
    secret = tmp_path / "support"
    secret.write_text("support-token\nignored second line\n")
    text = text.replace("/run/secrets/threads_support", str(secret))
    config = parse_config(yaml.safe_load(text), env)
    assert [a.name for a in config.accounts] == ["brand", "support"]
    assert config.accounts[1].access_token == "support-token"
    assert config.accounts[1].quotas == ("posts", "replies")


def test_environment_variables_are_expanded():
    config = parse_config(minimal(access_token="${TOKEN}"), {"TOKEN": "from-env"})
    assert config.accounts[0].access_token == "from-env"


def test_unset_variable_names_field_and_variable():
    message = error_of(minimal(access_token="${NOPE}"))
    assert message == "accounts[0].access_token: environment variable NOPE is not set"


def test_missing_token_file_names_field_and_path():
    data = {"accounts": [{"name": "a", "access_token": "t"},
                         {"name": "b", "access_token_file": "/run/secrets/x"}]}
    assert error_of(data) == "accounts[1].access_token_file: no such file: /run/secrets/x"


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"acounts": []}, "acounts: unknown key"),
        (minimal(acess_token="x"), "accounts[0].acess_token: unknown key"),
        ({"api": {"timeout": 3}}, "api.timeout: unknown key"),
        ({"accounts": [{"name": "a", "access_token": "t"}, {"name": "a", "access_token": "u"}]},
         "accounts[1].name: duplicate account name 'a'"),
        ({"accounts": [{"name": "a"}]},
         "accounts[0]: one of access_token or access_token_file is required"),
        (minimal(access_token_file="/x"),
         "accounts[0]: set only one of access_token and access_token_file"),
        ({"accounts": [{"name": "a b", "access_token": "t"}]},
         "accounts[0].name: must match [a-zA-Z0-9_.-]+, got 'a b'"),
        ({"accounts": [{"access_token": "t"}]}, "accounts[0].name: required"),
        (minimal(quotas=["posts", "likes"]), "accounts[0].quotas[1]: unknown quota 'likes', "
         "expected one of posts, replies, deletes, location_searches"),
        (minimal(quotas="posts"), "accounts[0].quotas: expected a list, got str"),
        (minimal(user_id="../me"), "accounts[0].user_id: must be 'me' or a numeric id, "
         "got '../me'"),
        ({"api": {"max_concurrency": 0}}, "api.max_concurrency: must be at least 1, got 0"),
        ({"api": {"max_concurrency": 2.5}},
         "api.max_concurrency: expected a whole number, got 2.5"),
        ({"api": {"timeout_seconds": "soon"}}, "api.timeout_seconds: expected a number, "
         "got 'soon'"),
        ({"api": {"timeout_seconds": True}}, "api.timeout_seconds: expected a number, "
         "got a boolean"),
        ({"api": {"base_url": "graph.threads.net"}}, "api.base_url: expected an http(s) URL, "
         "got 'graph.threads.net'"),
        ({"api": []}, "api: expected a mapping, got a list"),
        ({"cache_ttl_seconds": 0}, "cache_ttl_seconds: must be at least 1, got 0"),
        ({"accounts": "brand"}, "accounts: expected a list, got str"),
        ({"containers": {"poll_interval_seconds": 0.5}},
         "containers.poll_interval_seconds: must be at least 1, got 0.5"),
        ({"containers": {"track": [{"account": "ghost", "id": "1"}]}},
         "containers.track[0].account: no configured account named 'ghost'"),
        ({**minimal(), "containers": {"track": [{"account": "brand", "id": "../me"}]}},
         "containers.track[0].id: a container id is digits only, got '../me'"),
        ({**minimal(), "containers": {"track": [{"account": "brand", "id": "1", "x": 1}]}},
         "containers.track[0].x: unknown key"),
        ([1, 2], "<top>: expected a mapping, got a list"),
    ],
)
def test_bad_config_names_the_field(data, expected):
    assert error_of(data) == expected


def test_numeric_user_id_is_kept_as_string():
    config = parse_config(minimal(user_id=17841400000000000), {})
    assert config.accounts[0].user_id == "17841400000000000"


def test_quotas_are_kept_in_canonical_order():
    config = parse_config(minimal(quotas=["replies", "posts"]), {})
    assert config.accounts[0].quotas == ("posts", "replies")


def test_invalid_yaml_names_the_line(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("accounts:\n  - name: a\n   access_token: [\n")
    with pytest.raises(ConfigError, match=r"invalid YAML at line \d+"):
        load_config(path)


def test_tokens_never_appear_in_repr():
    config = parse_config(minimal(access_token="SUPERSECRET"), {})
    assert "SUPERSECRET" not in repr(config)
    assert config.secrets() == ["SUPERSECRET"]
