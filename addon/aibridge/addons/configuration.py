"""Configuration: the bridge's options, its settings file (and the actors and keys files it
names), hot reload of those files, and the recorder and telemetry that live across requests.

A bad file at start-up is a configuration error mitmproxy refuses to start with; a bad file on
reload is logged and the current settings stay. In-flight requests keep the settings they
started with.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from pathlib import Path

from mitmproxy import ctx, exceptions

from aibridge.addons import startup
from aibridge.addons.dispatch import Dispatch
from aibridge.addons.runtime import Runtime
from aibridge.config import ConfigError
from aibridge.observe import accesslog, health
from aibridge.observe.reporting import Reporter
from aibridge.observe.telemetry import Telemetry, TelemetryConfigError
from aibridge.recording.db_errors import RecordingError
from aibridge.recording.recorder import Recorder
from aibridge.settings import Settings

logger = logging.getLogger("aibridge")
MITMWEB_DEFAULT_COLUMNS = ["tls", "icon", "path", "method", "status", "size", "time"]
CONNECTION_OPTIONS = {"bridge_config", "ssl_insecure", "ssl_verify_upstream_trusted_ca", "mode",
                      "upstream_auth"}


class Configuration:
    def __init__(self, runtime: Runtime, *, reload_interval: float = 1.0) -> None:
        self.runtime = runtime
        self.reload_interval = reload_interval
        self.recorder: Recorder | None = None
        self.telemetry: Telemetry | None = None
        self._watcher: asyncio.Task | None = None

    def load(self, loader) -> None:
        loader.add_option("bridge_config", str | None, None,
                          "AI Bridge configuration file (TOML). Keys never go in options.")
        loader.add_option("bridge_access_log", str, "stderr",
                          "Where the one line per interception goes: stderr, event-log "
                          "(mitmproxy's log, shown in mitmweb), a file path, or off.")

    def configure(self, updated: set[str]) -> None:
        if "connection_strategy" in updated and ctx.options.connection_strategy != "lazy":
            # Eager dials the real host at CONNECT time, before we can choose the upstream or
            # answer offline; lazy lets the request hook decide first.
            logger.info("aibridge: using connection_strategy=lazy")
            ctx.options.connection_strategy = "lazy"
        if "web_columns" in updated and "comment" not in ctx.options.web_columns \
                and list(ctx.options.web_columns) == MITMWEB_DEFAULT_COLUMNS:
            # mitmweb hides flow comments by default; ours say actor, model, key hint, tokens.
            ctx.options.web_columns = [*MITMWEB_DEFAULT_COLUMNS, "comment"]
        if "bridge_access_log" in updated:
            accesslog.configure(ctx.options.bridge_access_log)
        running = self.runtime.settings_or_none
        if "bridge_config" in updated and running is not None \
                and running.config_path == ctx.options.bridge_config:
            # mitmproxy rolling back a change it refused (mitmweb, console): the running
            # settings are that file's already (the watcher reloads it when it changes), and
            # loading it afresh would forget open circuits and cooling keys.
            logger.info("aibridge: bridge_config back to the running configuration; kept")
        elif "bridge_config" in updated:
            with startup.refusing():  # at start-up: one line on stderr, exit 78
                settings = Settings.load(ctx.options.bridge_config, self.runtime.counters)
                self.guard_open_proxy(settings)
                self._start_reporting(settings)
            self.runtime.apply(settings)
            for line in settings.describe():
                logger.info(f"aibridge: {line}")
            for line in settings.warnings():
                logger.warning(f"aibridge: {line}")
            logger.info(f"aibridge: {self._reporting_summary()}")
        elif running is not None and updated & {"mode", "listen_host", "listen_port"}:
            self.guard_open_proxy(self.runtime.settings)
        if updated & CONNECTION_OPTIONS and self.runtime.has_resend_client:
            asyncio.get_running_loop().create_task(self.runtime.drop_resend_client())

    @staticmethod
    def guard_open_proxy(settings: Settings) -> None:
        if settings.actors.requires_auth or settings.config.auth.allow_open_proxy:
            return
        problem = health.open_proxy_problem(listen_addresses())
        if problem:
            raise exceptions.OptionsError(f"aibridge: {problem}")

    def running(self) -> None:
        if before := scripts_before_bridge():
            logger.warning(
                f"aibridge: {', '.join(before)} {'is' if len(before) == 1 else 'are'} loaded "
                "before the bridge's script: mitmproxy runs all scripts (-s) as one addon, and "
                "an exception in one script's hook skips the scripts after it for that event, "
                "so a failure there would send a request on without the bridge. Load the "
                "bridge's script first.")
        if self._watcher is None:
            self._watcher = asyncio.get_running_loop().create_task(self._watch_files())
            # What start-up built (modules, price tables, settings) lives as long as the
            # process: out of the collector's sight, a full collection walks request garbage
            # only instead of every object of the process.
            gc.freeze()

    async def done(self) -> None:
        """Shutdown (SIGTERM) or script reload: in-flight requests and streams get a bounded
        time to finish, then every pending record is flushed."""
        if self._watcher is not None:
            self._watcher.cancel()
        settings = self.runtime.settings_or_none
        grace = settings.config.shutdown_grace if settings else 0
        deadline = time.monotonic() + grace
        if waiting := self.runtime.in_flight():
            logger.info(f"aibridge: waiting up to {grace:g}s for {waiting} in-flight request(s)")
        while self.runtime.in_flight() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await self.runtime.drop_resend_client()
        if settings is not None and settings.shared is not None:
            await asyncio.to_thread(settings.shared.close)
        if self.runtime.webhook is not None:  # budget notices still queued get a moment
            await asyncio.to_thread(self.runtime.webhook.close, 2.0)
            self.runtime.webhook = None
        self._stop_reporting()

    async def _watch_files(self) -> None:
        seen = self._fingerprint()
        while True:
            await asyncio.sleep(self.reload_interval)
            now = self._fingerprint()
            if now != seen:
                seen = now
                self.reload()

    def reload(self) -> bool:
        current = self.runtime.settings
        try:
            settings = Settings.load(current.config_path, self.runtime.counters,
                                     previous=current)
            self.guard_open_proxy(settings)
            if (settings.config.recording, settings.config.telemetry) != (
                    current.config.recording, current.config.telemetry):
                self._start_reporting(settings)
        except (ConfigError, exceptions.OptionsError) as e:
            logger.error(f"aibridge: reload rejected, keeping the current settings: {e}")
            return False
        self.runtime.apply(settings)
        logger.info("aibridge: configuration reloaded")
        for line in settings.describe():
            logger.info(f"aibridge: {line}")
        for line in settings.warnings():
            logger.warning(f"aibridge: {line}")
        return True

    def _fingerprint(self) -> tuple:
        settings = self.runtime.settings_or_none
        if settings is None:
            return ()
        marks = []
        for path in settings.watched_files():
            try:
                stat = path.stat()
                marks.append((str(path), stat.st_mtime_ns, stat.st_size))
            except OSError:
                marks.append((str(path), None, None))
        return tuple(marks)

    def _start_reporting(self, settings: Settings) -> None:
        """Recorder and telemetry live across requests; a config (re)load replaces them."""
        config = settings.config
        try:
            recorder = (Recorder.from_settings(config.recording, settings.base_dir)
                        if config.recording.enabled else None)
        except RecordingError as e:
            raise exceptions.OptionsError(f"aibridge: recording: {e}") from None
        try:
            telemetry = Telemetry.from_settings(
                config.telemetry.exporter, service_name=config.telemetry.service_name,
                otlp_endpoint=config.telemetry.otlp_endpoint, counters=self.runtime.counters)
        except TelemetryConfigError as e:
            if recorder is not None:
                recorder.close(5)
            raise exceptions.OptionsError(f"aibridge: telemetry: {e}") from None
        self._stop_reporting()
        self.recorder, self.telemetry = recorder, telemetry
        self.runtime.recorder = recorder
        self.runtime.reporter = Reporter(recorder, telemetry, prompts=config.recording.prompts,
                                         prompt_limit=config.recording.prompt_limit)

    def _stop_reporting(self) -> None:
        if self.recorder is not None:
            self.recorder.close(10)
        if self.telemetry is not None:
            self.telemetry.shutdown()
        self.recorder = self.telemetry = None
        self.runtime.recorder = None

    def _reporting_summary(self) -> str:
        where = (f"records to {self.recorder.stats()['database']}" if self.recorder
                 else "recording off")
        return f"{where}; telemetry exporter {self.runtime.settings.config.telemetry.exporter}"


def listen_addresses() -> list[tuple[str, int | None]]:
    return health.listen_addresses(ctx.options.mode, ctx.options.listen_host,
                                   ctx.options.listen_port or 8080)


def scripts_before_bridge() -> list[str]:
    """The file names of the scripts (-s) mitmproxy loaded before the one holding the bridge."""
    loader = ctx.master.addons.get("scriptloader")
    before = []
    for script in getattr(loader, "addons", ()):
        if any(isinstance(a, Dispatch) for a in getattr(script.ns, "addons", ())):
            return before
        before.append(Path(script.fullpath).name)
    return []  # not loaded as a script (tests, a custom master): nothing runs before it
