"""Budget notices POSTed as JSON to `[budgets_settings] webhook_url`, off the request path.

`post` only queues (a bounded queue: when it is full the notice is dropped with a log line, it
was logged already); a daemon thread sends, retrying a failure (a connection error, a 5xx, a
429) with exponential backoff, `attempts` times in all. A 4xx other than 408/429 is not retried:
the receiver refused the notice, and redirects are not followed. The URL may carry a secret
(Slack and Teams put one in the path), so log lines name only its scheme and host; the
standard library's client is used because it logs nothing of its own (httpx2 logs every
request line, URL included).
"""

from __future__ import annotations

import http.client
import json
import logging
import queue
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from urllib.parse import urlsplit

logger = logging.getLogger("aibridge")
QUEUE_SIZE = 1000
FIRST_BACKOFF = 1.0  # seconds, doubled per attempt
MAX_BACKOFF = 60.0


class Webhook:
    def __init__(self, url: str, *, timeout: float = 5.0, attempts: int = 5,
                 first_backoff: float = FIRST_BACKOFF,
                 send: Callable[[bytes], int] | None = None) -> None:
        """`send`: POSTs a body and returns the status (tests); default: urllib."""
        self.url, self.timeout, self.attempts = url, timeout, max(1, attempts)
        self.first_backoff = first_backoff
        parts = urlsplit(url)
        self.where = f"{parts.scheme}://{parts.hostname}"
        self._queue: queue.Queue[Mapping[str, object] | None] = queue.Queue(QUEUE_SIZE)
        self._stop = threading.Event()
        self._post = send or self._urllib_post
        self.sent = self.failed = 0
        self._thread = threading.Thread(target=self._run, name="aibridge-webhook", daemon=True)
        self._thread.start()

    def post(self, payload: Mapping[str, object]) -> None:
        try:
            self._queue.put_nowait(dict(payload))
        except queue.Full:
            logger.warning(f"aibridge: budget webhook {self.where}: {QUEUE_SIZE} notices waiting;"
                           " dropping this one")

    def close(self, timeout: float = 5.0) -> None:
        """Send what is queued (within `timeout`), then stop."""
        self._queue.put(None)
        self._thread.join(timeout)
        self._stop.set()

    def _run(self) -> None:
        while True:
            payload = self._queue.get()
            if payload is None:
                return
            self._send(payload)

    def _urllib_post(self, body: bytes) -> int:
        request = urllib.request.Request(self.url, data=body, method="POST", headers={
            "Content-Type": "application/json", "User-Agent": "aibridge-budgets"})
        opener = urllib.request.build_opener(_NoRedirects())
        try:
            with opener.open(request, timeout=self.timeout) as response:
                return response.status
        except urllib.error.HTTPError as e:
            e.close()
            return e.code

    def _send(self, payload: Mapping[str, object]) -> None:
        body = json.dumps(payload, separators=(",", ":")).encode()
        delay = self.first_backoff
        problem = ""
        for attempt in range(1, self.attempts + 1):
            try:
                status = self._post(body)
                if status < 300:
                    self.sent += 1
                    return
                problem = f"status {status}"
                if status < 500 and status not in (408, 429):
                    break
            except (OSError, http.client.HTTPException) as e:  # URLError, timeouts, resets
                problem = type(e).__name__
            if attempt < self.attempts and self._stop.wait(delay):
                break  # closing: no more waiting
            delay = min(delay * 2, MAX_BACKOFF)
        self.failed += 1
        logger.error(f"aibridge: budget webhook {self.where}: notice not delivered after "
                     f"{attempt} attempt(s) ({problem}): {payload.get('message')}")


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None
