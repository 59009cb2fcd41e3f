"""Whether a provider's upstream answers connections, and the bridge's own connect retries.

A client that meets "connection refused" retries with its own back-off (Claude Code for minutes,
Codex with growing `Retry-After` waits) before it shows anything. The bridge retries instead:
once a connection to an upstream address has failed, the next connection to it waits for a
TCP connect to succeed, retrying with back-off for at most `window` seconds, and only then lets
mitmproxy dial. A window that ends without a connection marks the address as given up: later
connections make one quick attempt and fail at once, and the client is told the bridge already
retried (see `gave_up`). One successful connection, ours or mitmproxy's, clears everything.

On the healthy path this costs a dictionary lookup per new upstream connection: nothing is
probed until a connection has failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

Address = tuple[str, int]
Connect = Callable[[Address, float], Awaitable[None]]

FIRST_DELAY = 0.25  # seconds before the second attempt; doubled each time
MAX_DELAY = 2.0
QUICK_TIMEOUT = 2.0  # the one attempt made for an address the bridge has given up on


async def tcp_connect(address: Address, timeout: float) -> None:
    """One TCP connection, closed at once. Raises OSError or TimeoutError."""
    _reader, writer = await asyncio.wait_for(asyncio.open_connection(*address), timeout)
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()


@dataclass
class _State:
    failed_at: float
    gave_up_at: float | None = None
    probe: asyncio.Task[bool] | None = None


@dataclass
class Reachability:
    window: float = 10.0  # seconds the bridge spends retrying before it gives up
    connect: Connect = tcp_connect
    clock: Callable[[], float] = time.monotonic
    _states: dict[Address, _State] = field(default_factory=dict)

    def failed(self, address: Address) -> None:
        """mitmproxy could not connect to `address`."""
        if address not in self._states:
            self._states[address] = _State(failed_at=self.clock())

    def connected(self, address: Address) -> None:
        self._states.pop(address, None)

    def gave_up(self, address: Address | None) -> bool:
        """The bridge retried `address` for a whole window without a connection."""
        state = self._states.get(address) if address is not None else None
        return state is not None and state.gave_up_at is not None

    async def wait_until_reachable(self, address: Address) -> bool:
        """Before mitmproxy dials `address`: True at once when nothing is known against it;
        otherwise retry (sharing one probe between concurrent callers) and say whether a
        connection succeeded."""
        state = self._states.get(address)
        if state is None:
            return True
        if state.probe is None or state.probe.done():
            attempts = 1 if state.gave_up_at is not None else None
            state.probe = asyncio.ensure_future(self._probe(address, state, attempts))
        return await asyncio.shield(state.probe)

    async def _probe(self, address: Address, state: _State, attempts: int | None) -> bool:
        deadline = self.clock() + self.window
        delay = FIRST_DELAY
        tries = 0
        while True:
            tries += 1
            remaining = deadline - self.clock()
            timeout = QUICK_TIMEOUT if attempts == 1 else max(QUICK_TIMEOUT, remaining)
            try:
                await self.connect(address, timeout)
            except (OSError, TimeoutError):
                pass
            else:
                self.connected(address)
                return True
            remaining = deadline - self.clock()
            if (attempts is not None and tries >= attempts) or remaining <= 0:
                state.gave_up_at = self.clock()
                return False
            await asyncio.sleep(min(delay, remaining))
            delay = min(delay * 2, MAX_DELAY)
