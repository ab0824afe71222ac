"""Secrets: with known token strings and --log.level debug, walk every code path the other
suites exercise (healthy and failing upstream answers, probe, landing page, reload good and
bad, by HTTP and SIGHUP, registration API, 4xx answers, shutdown) and find the tokens in no
log line, no HTTP response (headers included) and no metric. Plus: the registration token is
checked with hmac.compare_digest, whose verdict alone decides."""

from __future__ import annotations

import hmac
import secrets
import signal
import sqlite3
from collections.abc import Callable
from pathlib import Path
from unittest import mock

import httpx
import pytest
import yaml

from fake_graph import FakeGraph, body, graph_error, hang, healthy, huge, reset_mid_body
from procs import RunningExporter
from threads_exporter.app import Exporter
from threads_exporter.config import Account, ApiConfig, Config, ContainersConfig
from threads_exporter.web import routes as server_module
from waiting import wait_for

RANDOM = secrets.token_hex(8)
NAMES = ("healthy", "expired", "echoes", "throttled", "no-delete", "html", "not-json", "huge",
         "reset", "hang")
# Tokens as Meta issues them, and tokens with the characters that escape a naive redactor once
# serialised: a quote, a backslash, non-ASCII, a space (JSON and logfmt escape all of them).
STYLES = {
    "plain": lambda name: f"SECRET-TOKEN-{name}-{RANDOM}",
    "odd": lambda name: f'SECRET"TOK\\EN €{name} {RANDOM}',
}
TOKENS = {name: STYLES["plain"](name) for name in NAMES}
API_TOKEN = f"SECRET-API-{RANDOM}"


def behaviours() -> dict:
    t = TOKENS
    return {
        t["healthy"]: healthy(1),
        t["expired"]: graph_error(400, 190, "Session has expired", subcode=463),
        # An upstream that quotes the token back in its error message.
        t["echoes"]: graph_error(400, 190, f"Invalid OAuth access token {t['echoes']}"),
        t["throttled"]: graph_error(400, 4, "(#4) Application request limit reached",
                                    transient=True),
        t["no-delete"]: graph_error(500, 10, "(#10) no permission", deny="delete_quota_usage"),
        t["html"]: body(502, b"<html>Bad Gateway</html>", "text/html"),
        t["not-json"]: body(200, f"oops {t['not-json']}".encode(), "text/plain"),
        t["huge"]: huge(4),
        t["reset"]: reset_mid_body,
        t["hang"]: hang,
    }


def config_text(base_url: str, *, extra_account: str | None = None) -> str:
    accounts = [{"name": n, "access_token": t} for n, t in TOKENS.items()]
    if extra_account:
        accounts.append({"name": extra_account, "access_token": TOKENS["healthy"]})
    return yaml.safe_dump({
        "api": {"base_url": base_url, "timeout_seconds": 1},
        "accounts": accounts,
        "containers": {"api_token": API_TOKEN, "state_path": "state.db"},
    })


@pytest.mark.parametrize(("style", "log_format"), [("plain", "logfmt"), ("odd", "logfmt"),
                                                  ("odd", "json")])
def test_tokens_appear_nowhere(tmp_path: Path, fake_graph: FakeGraph,
                               run_exporter: Callable[..., RunningExporter],
                               monkeypatch: pytest.MonkeyPatch, style: str,
                               log_format: str) -> None:
    monkeypatch.setitem(globals(), "TOKENS", {n: STYLES[style](n) for n in NAMES})
    seen: list[str] = []  # every response, status line, headers and body

    def record(r: httpx.Response) -> httpx.Response:
        seen.append(f"{r.status_code} {r.headers}\n{r.text}")
        return r

    def reload_failures() -> int:
        return exporter.output().count("config reload failed")

    fake_graph.tokens.update(behaviours())
    # A container whose error_message quotes the token back: stored, listed, never raw.
    fake_graph.container("1", {"status": "ERROR",
                               "error_message": f"bad media for {TOKENS['healthy']}"})
    path = tmp_path / "config.yaml"
    path.write_text(config_text(fake_graph.base_url))
    exporter = run_exporter("--config.file", str(path), "--log.level", "debug",
                            "--log.format", log_format, "--web.enable-lifecycle", cwd=tmp_path)
    with httpx.Client(base_url=exporter.base, timeout=20) as c:
        api = {"Authorization": f"Bearer {API_TOKEN}"}
        scrape = {"X-Prometheus-Scrape-Timeout-Seconds": "5"}
        record(c.get("/metrics", headers=scrape))
        record(c.get("/metrics", headers=scrape))  # cached, and backoff paths
        for name in TOKENS:
            record(c.get("/probe", params={"account": name}, headers=scrape))
        for path_ in ("/", "/-/healthy", "/-/ready", f"/{TOKENS['healthy']}",
                      f"/metrics?access_token={TOKENS['healthy']}"):
            record(c.get(path_))
        record(c.get("/probe", params={"account": TOKENS["healthy"]}))
        record(c.post("/api/v1/containers", json={"account": "healthy", "id": "1"},
                      headers=api))
        record(c.post("/api/v1/containers",
                      json={"account": TOKENS["healthy"], "id": "2"}, headers=api))
        record(c.post("/api/v1/containers", json={"account": "healthy", "id": "2"},
                      headers={"Authorization": f"Bearer {TOKENS['healthy']}".encode()}))
        wait_for(lambda: record(c.get("/metrics", headers=scrape)).text,
                 until=lambda text: 'status="ERROR"} 1.0' in text)  # container 1 polled
        record(c.get("/api/v1/containers", headers=api))
        record(c.get("/api/v1/containers", params={"account": API_TOKEN}, headers=api))
        # A bad config whose error would quote a token (user_id and token swapped).
        good = path.read_text()
        path.write_text(good.replace("name: healthy", f"name: healthy\n  user_id: "
                                                      f"{TOKENS['healthy']}", 1))
        reload_failed = record(c.post("/-/reload"))
        assert reload_failed.status_code == 400
        # The same bad config by SIGHUP: logged once the signal is handled.
        exporter.send_signal(signal.SIGHUP)
        wait_for(reload_failures, until=lambda n: n == 2)
        path.write_text(config_text(fake_graph.base_url, extra_account="added"))
        assert record(c.post("/-/reload")).status_code == 200
        record(c.get("/metrics", headers=scrape))
        exporter.send_signal(signal.SIGTERM)
        assert exporter.wait(15) == 0
        logs = exporter.output()
    metrics = seen[0]
    state = sqlite3.connect(tmp_path / "state.db")
    rows = repr(state.execute("SELECT * FROM containers").fetchall())
    state.close()

    # The paths above really ran: failures were logged, at debug level too; the container's
    # error was stored; the state file is the owner's alone.
    assert "quota reading failed" in logs and ("level=debug" in logs
                                               or '"level": "debug"' in logs)
    assert "bad media for <redacted>" in rows
    assert (tmp_path / "state.db").stat().st_mode & 0o077 == 0
    assert "config reload failed" in logs
    assert 'threads_up{account="healthy"} 1.0' in metrics
    for where, text in {"logs": logs, "state file": rows,
                        **{f"response {i}": s for i, s in enumerate(seen)}}.items():
        for secret in [*TOKENS.values(), API_TOKEN]:
            # The random part alone would show a partly masked or escaped token too.
            assert secret not in text and RANDOM not in text, f"{where} leaks {secret}"


def test_registration_token_is_compared_with_compare_digest(
        tmp_path: Path, serve_exporter: Callable[..., tuple[Exporter, str]]) -> None:
    config = Config(api=ApiConfig(base_url="http://127.0.0.1:9"),
                    accounts=(Account("a", "me", "tok-a"),),
                    containers=ContainersConfig(api_token=API_TOKEN,
                                                state_path=str(tmp_path / "s.db")))
    _, base = serve_exporter(config)
    url = f"{base}/api/v1/containers"
    calls: list[tuple[object, object]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    with mock.patch.object(server_module.hmac, "compare_digest", spy):
        ok = httpx.get(url, headers={"Authorization": f"Bearer {API_TOKEN}"}, timeout=10)
        wrong = httpx.get(url, headers={"Authorization": "Bearer nope"}, timeout=10)
    assert (ok.status_code, wrong.status_code) == (200, 401)
    assert (API_TOKEN.encode(), API_TOKEN.encode()) in calls
    assert len(calls) == 2
    # Its verdict alone decides: no other comparison lets the right token in.
    with mock.patch.object(server_module.hmac, "compare_digest", lambda a, b: False):
        refused = httpx.get(url, headers={"Authorization": f"Bearer {API_TOKEN}"},
                            timeout=10)
    assert refused.status_code == 401
