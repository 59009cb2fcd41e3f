"""Fixtures for the whole test run: a real, throwaway PostgreSQL server, a real redis-server
(`redis_server`, per test), and sample records.

`scripts/postgres` installs (if needed) and starts one server on loopback for the session;
each test that asks for `postgres_url` gets a fresh database on it. If the server cannot
start, the tests that need it fail with the reason and the server log: never a skip.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from aibridge.recording.records import (
    InterceptionEnded,
    InterceptionStarted,
    PromptUsage,
    Record,
    TokenUsage,
    ToolUsage,
)

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "postgres"


def eventually(check: Callable[[], bool], timeout: float = 15.0, every: float = 0.02) -> bool:
    """Poll `check` until it holds or `timeout` passes (then its last answer): for what
    arrives on its own time (pub/sub, a worker's health, a background re-sync)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(every)
    return check()


class PostgresServer:
    """One server kept in `directory`; stop() and start() keep its data and its port."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.url = ""

    def start(self) -> str:
        self.url = self._run("start", timeout=300)  # may apt-get install PostgreSQL first
        return self.url

    def stop(self) -> None:
        self._run("stop", timeout=60)

    def log_tail(self, lines: int = 40) -> str:
        log = self.directory / "server.log"
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) \
            if log.is_file() else "(no server log)"

    def database_url(self, name: str) -> str:
        return self.url.rsplit("/", 1)[0] + "/" + name

    def create_database(self) -> str:
        name = f"test_{uuid.uuid4().hex[:12]}"
        self._sql(f'CREATE DATABASE "{name}"')
        return name

    def drop_database(self, name: str) -> None:
        self._sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def _sql(self, statement: str) -> None:
        import psycopg
        with psycopg.connect(self.url, autocommit=True, connect_timeout=10) as connection:
            connection.execute(statement.encode())

    def _run(self, command: str, timeout: float) -> str:
        try:
            done = subprocess.run([str(SCRIPT), command, str(self.directory)], text=True,
                                  capture_output=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"scripts/postgres {command} did not finish in {timeout:.0f}s\n"
                               f"{self.log_tail()}") from None
        if done.returncode != 0:
            raise RuntimeError(f"scripts/postgres {command} {self.directory} failed "
                               f"(exit {done.returncode}):\n{done.stderr}\n{self.log_tail()}")
        return done.stdout.strip()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    # Not under pytest's tmp_path: that is private to root, and the server runs as another
    # user when the tests run as root.
    server = PostgresServer(Path(tempfile.mkdtemp(prefix="aibridge-pg-")))
    try:
        server.start()
    except RuntimeError as e:
        shutil.rmtree(server.directory, ignore_errors=True)
        pytest.fail(f"PostgreSQL for the tests did not start: {e}", pytrace=False)
    yield server
    try:
        server.stop()
    finally:
        shutil.rmtree(server.directory, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres: PostgresServer) -> Iterator[str]:
    """A fresh, empty database on the session's server, dropped afterwards."""
    name = postgres.create_database()
    yield postgres.database_url(name)
    postgres.start()  # a test that stopped the server may have failed before restarting it
    postgres.drop_database(name)


class RedisServer:
    """A real redis-server (Debian's) on a free loopback port, no persistence. `kill()` ends
    it at once (an outage); `start()` brings it back on the same port, empty."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> str:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not Path(binary).exists():
            subprocess.run([str(ROOT / "scripts" / "redis"), "install"], check=True,
                           timeout=300, capture_output=True)
        for _ in range(5):
            if not self.port or self.process is None:
                self.port = self.port or _free_port()
            log = (self.directory / "redis.log").open("ab")
            self.process = subprocess.Popen(
                [binary, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
                 "--appendonly", "no", "--dir", str(self.directory)],
                stdout=log, stderr=subprocess.STDOUT)
            if self._wait_ready():
                return self.url
            self.kill()
            self.port = _free_port()
        raise RuntimeError(f"redis-server did not start:\n{self.log_tail()}")

    def _wait_ready(self) -> bool:
        import socket
        import time
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                return False
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return True
            except OSError:
                pass
            time.sleep(0.02)
        return False

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def log_tail(self, lines: int = 20) -> str:
        log = self.directory / "redis.log"
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) \
            if log.is_file() else "(no log)"


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A fresh redis-server per test: tests may kill it. Never skipped: if it cannot start,
    the test fails with the reason."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    try:
        server.start()
    except (RuntimeError, subprocess.SubprocessError, OSError) as e:
        pytest.fail(f"redis-server for the tests did not start: {e}", pytrace=False)
    yield server
    server.kill()


def interception(iid: str | None = None, *, actor: str = "alice", model: str = "claude-x",
                 started_at: float = 1_767_225_600.0, outcome: str = "completed",
                 tokens: tuple[int, int, int, int] | None = (100, 20, 5, 7),
                 ended: bool = True, provider_type: str = "anthropic",
                 extra: dict[str, int] | None = None) -> list[Record]:
    """The records of one interception: start, one token usage, a prompt, a tool call, end."""
    iid = iid or str(uuid.uuid4())
    records: list[Record] = [InterceptionStarted(
        id=iid, started_at=started_at, actor_id=actor,
        actor_metadata={"Username": actor, "Team": "ml"}, provider=provider_type,
        provider_type=provider_type, route="/v1/messages", model=model, streaming=True,
        transport="http", client="Claude Code", client_session_id="sess-1",
        user_agent="claude-cli/2.0", credential_kind="centralized", credential_hint="sk-a...wxyz",
        credential_length=48, correlating_tool_call_id=None)]
    if tokens is not None:
        records.append(TokenUsage(interception_id=iid, msg_id="msg_1", input_tokens=tokens[0],
                                  output_tokens=tokens[1], cache_read_tokens=tokens[2],
                                  cache_write_tokens=tokens[3],
                                  extra={"web_search_requests": 1} if extra is None else extra,
                                  created_at=started_at + 0.5))
    records.append(PromptUsage(interception_id=iid, msg_id="msg_1", prompt="fix the tests",
                               truncated=False, created_at=started_at + 0.1))
    records.append(ToolUsage(interception_id=iid, msg_id="msg_1", tool="bash",
                             tool_call_id="toolu_1", arguments='{"cmd": "ls"}',
                             created_at=started_at + 0.6))
    if ended:
        failed = outcome != "completed"
        records.append(InterceptionEnded(
            id=iid, ended_at=started_at + 1.25, outcome=outcome, status=500 if failed else 200,
            error_type="server_error" if failed else None,
            error_message="upstream said no" if failed else None,
            credential_hint="sk-a...wxyz", credential_length=48, response_model=model,
            response_id="msg_1", time_to_first_token=0.25, key_attempts=1))
    return records
