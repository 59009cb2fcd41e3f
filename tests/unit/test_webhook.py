"""The budget webhook: POSTs JSON to a local HTTP server off the caller's thread, retries
failures with backoff, gives up on refusals, never follows redirects, never logs the URL's
path."""

from __future__ import annotations

import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from aibridge.observe.webhook import Webhook


class Receiver:
    def __init__(self, statuses: list[int]) -> None:
        self.statuses = statuses
        self.bodies: list[dict] = []
        self.attempts = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                receiver.attempts += 1
                body = self.rfile.read(int(self.headers["Content-Length"]))
                status = receiver.statuses.pop(0) if receiver.statuses else 204
                if status < 300:
                    receiver.bodies.append(json.loads(body))
                self.send_response(status)
                if 300 <= status < 400:
                    self.send_header("Location", "/elsewhere")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}/hooks/T0KEN-secret"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver_for():
    made = []

    def make(statuses: list[int]) -> Receiver:
        made.append(Receiver(statuses))
        return made[-1]

    yield make
    for r in made:
        r.close()


def wait_for(check, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_a_notice_is_posted_as_json_off_the_callers_thread(receiver_for):
    receiver = receiver_for([])
    hook = Webhook(receiver.url, first_backoff=0.01)
    started = time.monotonic()
    hook.post({"event": "budget.warning", "budget": "ml", "share": 0.8})
    assert time.monotonic() - started < 0.05  # only queued
    wait_for(lambda: hook.sent == 1)
    assert receiver.bodies == [{"event": "budget.warning", "budget": "ml", "share": 0.8}]
    hook.close()


def test_failures_are_retried_with_backoff(receiver_for, caplog):
    receiver = receiver_for([503, 500, 204])
    hook = Webhook(receiver.url, attempts=5, first_backoff=0.01)
    hook.post({"event": "budget.spent"})
    wait_for(lambda: hook.sent == 1)
    assert receiver.attempts == 3 and hook.failed == 0
    hook.close()


def test_refusals_and_redirects_are_not_retried_and_the_url_path_is_not_logged(receiver_for,
                                                                                caplog):
    caplog.set_level(logging.INFO, logger="aibridge")
    for status in (400, 302):
        receiver = receiver_for([status])
        hook = Webhook(receiver.url, attempts=5, first_backoff=0.01)
        hook.post({"event": "budget.spent", "message": "budget x is spent"})
        wait_for(lambda hook=hook: hook.failed == 1)
        assert receiver.attempts == 1
        hook.close()
    assert "not delivered after 1 attempt(s) (status 400): budget x is spent" in caplog.text
    assert "T0KEN" not in caplog.text and "127.0.0.1" in caplog.text


def test_an_unreachable_receiver_is_given_up_after_the_attempts(caplog):
    hook = Webhook("http://127.0.0.1:9/hook", attempts=3, first_backoff=0.01, timeout=1)
    hook.post({"event": "budget.warning", "message": "m"})
    wait_for(lambda: hook.failed == 1)
    assert "after 3 attempt(s)" in caplog.text
    hook.close()
