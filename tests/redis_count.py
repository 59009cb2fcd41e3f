"""Round trips to a real redis-server, counted where they arrive: `MONITOR` shows every
command a client sends (and, apart, those Lua scripts run inside the server). Nothing on the
bridge's request path pipelines, so each command a bridge sends is one round trip."""

from __future__ import annotations

import threading
import time

import redis


class RoundTrips:
    """The commands clients send the server while the block runs, but the bridges'
    heartbeats (SET of a liveness key) and this counter's own. `client` is a connection for
    the block to read the server with, uncounted."""

    def __init__(self, url: str) -> None:
        self.commands: list[str] = []  # command names, in the order the server ran them
        self.marker = f"end-of-count-{time.monotonic_ns()}"
        self.client = redis.Redis.from_url(url, socket_timeout=5)
        self._mine = str(self.client.client_info()["addr"])  # connects before the count
        self._monitor = redis.Redis.from_url(url, socket_timeout=5)
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> RoundTrips:
        self._thread.start()
        if not self._ready.wait(5):
            raise RuntimeError("MONITOR did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.echo(self.marker)
        self._thread.join(5)
        self.client.close()
        self._monitor.close()

    def _watch(self) -> None:
        with self._monitor.monitor() as m:
            self._ready.set()
            for entry in m.listen():
                command = entry["command"]
                if command == f"ECHO {self.marker}":
                    return
                if entry["client_type"] == "lua" or self._heartbeat(command) or \
                        f"{entry['client_address']}:{entry['client_port']}" == self._mine:
                    continue
                self.commands.append(command.split(" ", 1)[0])

    @staticmethod
    def _heartbeat(command: str) -> bool:
        return command.startswith("SET ") and ":alive:" in command.split(" ", 2)[1]
