"""The demo's publishing pipeline: creates containers on the simulator and registers them."""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Callable

import httpx

from threads_exporter.demo.simulator import LIFECYCLES, demo_accounts

log = logging.getLogger(__name__)


class DemoPublisher:
    """A publishing pipeline for the demo: creates video containers on the simulator over
    HTTP and registers each one with the exporter, through the registration API's function.
    One full cycle of lifecycles at once, so the demo has data within seconds, then one
    container every `interval` seconds."""

    def __init__(self, base_url: str, register: Callable[[str, str], object],
                 interval: float = 10.0, version: str = "v1.0"):
        self.base_url = f"{base_url}/{version}"
        self.register = register
        self.interval = interval
        self._stop = threading.Event()
        live = [(name, a) for name, a in demo_accounts() if not a.expired]
        self._accounts = itertools.cycle(live)
        self._thread = threading.Thread(target=self._run, name="demo-publisher", daemon=True)

    def start(self) -> DemoPublisher:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        with httpx.Client(timeout=5.0) as http:
            for n in itertools.count():
                if n >= len(LIFECYCLES) and self._stop.wait(self.interval):
                    return
                if self._stop.is_set():
                    return
                name, account = next(self._accounts)
                try:
                    r = http.post(f"{self.base_url}/{account.user_id}/threads", params={
                        "media_type": "VIDEO", "video_url": f"https://example.com/demo-{n}.mp4",
                        "access_token": account.token})
                    self.register(name, r.raise_for_status().json()["id"])
                except Exception as e:  # the demo goes on; a real pipeline would retry
                    log.warning("demo publisher could not create a container",
                                extra={"account": name, "error": type(e).__name__})
