"""What Meta really sends, beyond the happy path: dev-mode apps that refuse debug_token asked
with the user's own token, and a user_id that is not the token's user (issue 12)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from threads_exporter.config import ConfigError, parse_config
from threads_exporter.graph.client import ThreadsClient
from threads_exporter.graph.stats import ApiStats
from threads_exporter.quotas.reader import QuotaReader

USER_TOKEN = "EAAG-user-token-of-brand"
APP_TOKEN = "TH|1234567890|app-secret-value"
TOKEN_USER = "17841400000000001"


def graph_error(code: int, message: str, status: int = 400) -> httpx.Response:
    return httpx.Response(status, json={"error": {"message": message, "type": "OAuthException",
                                                  "code": code, "fbtrace_id": "AbC"}})


class DevModeApi:
    """A Graph API of an app in development mode, as recorded: debug_token asked with the
    user's own token is refused with code 100; asked with the app token it answers."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, str]]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        url = urlsplit(str(request.url))
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        path = url.path.removeprefix("/v1.0")
        self.calls.append((path, query))
        if path == "/debug_token":
            if query.get("access_token") != APP_TOKEN:
                return graph_error(100, "(#100) The App must be in live mode to debug tokens "
                                   "of other users")
            return httpx.Response(200, json={"data": {"expires_at": 1900000000,
                                                      "is_valid": True}})
        if query.get("access_token") != USER_TOKEN:
            return graph_error(190, "Invalid OAuth access token - Cannot parse access token")
        if path == "/me":
            return httpx.Response(200, json={"id": TOKEN_USER})
        user = path.split("/")[1]
        if path.endswith("/threads_publishing_limit"):
            if user not in ("me", TOKEN_USER):
                # What a token reading another user's object gets: reads as an outage.
                return graph_error(2, "An unexpected error has occurred. Please retry your "
                                   "request later.", status=500)
            return httpx.Response(200, json={"data": [{
                "quota_usage": 3, "config": {"quota_total": 250, "quota_duration": 86400}}]})
        return graph_error(100, "Unsupported get request.")

    def count(self, path_suffix: str) -> int:
        return sum(1 for path, _ in self.calls if path.endswith(path_suffix))


def config(user_id: str = "me", **api: object) -> dict:
    return {"api": {"base_url": "http://threads.test", **api},
            "accounts": [{"name": "brand", "user_id": user_id, "access_token": USER_TOKEN,
                          "quotas": ["posts"]}]}


def scrape(upstream: DevModeApi, data: dict, times: int = 1, reload: dict | None = None):
    async def main():
        cfg = parse_config(data, env={})
        client = ThreadsClient(cfg.api, ApiStats(), transport=httpx.MockTransport(upstream))
        reader = QuotaReader(client, cfg)
        try:
            readings = []
            for n in range(1, times + 1):
                readings = await reader.scrape(time.monotonic() + 5)
                # Every cache and backoff over before the next scrape.
                reader.clock = lambda n=n: time.monotonic() + 10_000 * n
            if reload is not None:
                reader.reconfigure(parse_config(reload, env={}))
                readings = await reader.scrape(time.monotonic() + 5)
            return readings, client.stats
        finally:
            await client.aclose()

    return asyncio.run(main())


def test_debug_token_refused_with_the_users_own_token_leaves_expiry_unknown() -> None:
    upstream = DevModeApi()
    [reading], stats = scrape(upstream, config())
    assert reading.up and reading.token_expiry is None
    assert stats.errors[("brand", "debug_token", "invalid_request")] == 1


@pytest.mark.parametrize("where", ["api", "account", "file"])
def test_an_app_access_token_gives_the_expiry(tmp_path: Path, where: str) -> None:
    data = config()
    if where == "api":
        data["api"]["app_access_token"] = APP_TOKEN
    elif where == "account":
        data["api"]["app_access_token"] = "TH|other-app|wrong"  # the account's own wins
        data["accounts"][0]["app_access_token"] = APP_TOKEN
    else:
        (tmp_path / "app-token").write_text(APP_TOKEN + "\n")
        data["api"]["app_access_token_file"] = str(tmp_path / "app-token")
    upstream = DevModeApi()
    [reading], _ = scrape(upstream, data)
    assert reading.token_expiry == 1900000000
    [(_, query)] = [c for c in upstream.calls if c[0] == "/debug_token"]
    assert query == {"input_token": USER_TOKEN, "access_token": APP_TOKEN}
    assert APP_TOKEN in parse_config(data, env={}).secrets()  # redacted like every token


def test_both_app_token_forms_at_once_name_the_field() -> None:
    data = config(app_access_token=APP_TOKEN, app_access_token_file="/x")
    with pytest.raises(ConfigError, match="api: set only one of app_access_token"):
        parse_config(data, env={})


def test_a_user_id_that_is_not_the_tokens_user_is_a_config_error_not_an_outage(
        caplog: pytest.LogCaptureFixture) -> None:
    upstream = DevModeApi()
    readings, stats = scrape(upstream, config(user_id="17841499999999999"), times=4)
    [reading] = readings
    assert not reading.up and reading.error_reason == "invalid_request"
    assert "17841499999999999" in reading.error_message and TOKEN_USER in reading.error_message
    # Verified once; no publishing-limit call with the wrong id, however many scrapes.
    assert upstream.count("/me") == 1 and upstream.count("/threads_publishing_limit") == 0
    assert stats.requests[("brand", "me")] == 1
    [record] = [r for r in caplog.records if "user_id does not belong" in r.getMessage()]
    assert (record.user_id, record.token_user_id) == ("17841499999999999", TOKEN_USER)
    assert USER_TOKEN not in json.dumps(vars(record), default=str)


def test_a_fixed_user_id_is_verified_again_after_reload() -> None:
    upstream = DevModeApi()
    [reading], _ = scrape(upstream, config(user_id="17841499999999999"),
                          reload=config(user_id=TOKEN_USER))
    assert reading.up and reading.quotas and reading.quotas["posts"].usage == 3
    assert upstream.count("/me") == 2 and upstream.count("/threads_publishing_limit") == 1


def test_me_is_not_verified_and_a_right_id_costs_one_call_once() -> None:
    upstream = DevModeApi()
    scrape(upstream, config(), times=3)
    assert upstream.count("/me") == 0
    upstream = DevModeApi()
    [reading], _ = scrape(upstream, config(user_id=TOKEN_USER), times=3)
    assert reading.up and upstream.count("/me") == 1
    assert upstream.count("/threads_publishing_limit") == 3
