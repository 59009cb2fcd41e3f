"""`scripts/bench hooks`: the bridge's own work per request, in the process, without a network.

The addon chain exactly as `addon/bridge.py` builds it (one `Dispatch` over `chain()`, the
type-check fix installed) runs under mitmproxy's test master (`taddons`), configured like the
network benchmark's bridge: one OpenAI provider, no actors on loopback, recording on into a
fresh SQLite file (and, as a second scenario, off). Each request is the network benchmark's
small chat request on a bridged CONNECT; its hooks run in mitmproxy's order: requestheaders,
request, then (the provider's answer set on the flow) responseheaders, response. A stream is
the same request with `stream: true`, an SSE answer of N chunk events fed through the tap the
core installs, and the end of body.

What it reports is the event loop's CPU (`time.thread_time`) per request or stream, median of
rounds: the figure a change to the request path should move, steadier than the network
benchmark's ratios because nothing else shares the measurement. mitmproxy's own work (parsing,
TLS, the connection machinery) is not in it: the network benchmark measures that.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import inspect
import json
import os
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import bench
from mitmproxy import http
from mitmproxy.test import taddons, tflow, tutils

from aibridge.addons import mitm_fixes
from aibridge.addons.chain import chain
from aibridge.addons.dispatch import Dispatch
from aibridge.addons.runtime import Runtime
from benchlib import payloads

HOST = "api.openai.com"
ROUTE = "/v1/chat/completions"
ANSWER = json.dumps({
    "id": "chatcmpl-bench", "object": "chat.completion", "created": 1_700_000_000,
    "model": "gpt-4o", "choices": [{"index": 0, "finish_reason": "stop", "message": {
        "role": "assistant", "content": "Hello! How can I help you today?"}}],
    "usage": {"prompt_tokens": 11, "completion_tokens": 9, "total_tokens": 20}}).encode()


class Harness:
    def __init__(self, dispatch: Dispatch) -> None:
        self.dispatch = dispatch
        self.client: Any = None

    async def hook(self, name: str, *args: object) -> None:
        implementation = getattr(self.dispatch, name, None)
        if implementation is not None:
            result = implementation(*args)
            if inspect.isawaitable(result):
                await result

    async def tunnel(self) -> None:
        connect = tflow.tflow(req=tutils.treq(
            method=b"CONNECT", scheme=b"", host=HOST, port=443,
            authority=f"{HOST}:443".encode(), path=b"", content=b""))
        await self.hook("http_connect", connect)
        assert connect.response is None, "the CONNECT was refused"
        self.client = connect.client_conn
        self.client.sni = HOST

    def flow(self, body: bytes) -> http.HTTPFlow:
        headers = http.Headers(host=HOST, content_type="application/json",
                               content_length=str(len(body)),
                               authorization="Bearer sk-user-placeholder",
                               user_agent="aibridge-bench/1")
        request = tutils.treq(method=b"POST", scheme=b"https", host=HOST, port=443,
                              authority=b"", path=ROUTE.encode(), headers=headers, content=body)
        return tflow.tflow(client_conn=self.client, req=request)

    async def request(self, flow: http.HTTPFlow) -> float:
        """CPU of the request-side hooks; the flow must go upstream."""
        started = time.thread_time()
        await self.hook("requestheaders", flow)
        await self.hook("request", flow)
        spent = time.thread_time() - started
        if flow.response is not None:
            raise RuntimeError(f"the bridge refused the request: {flow.response.content!r}")
        return spent

    async def exchange(self, body: bytes, content_type: str, content: bytes | None,
                       events: tuple[bytes, ...] = ()) -> float:
        """One request with the provider's answer: `content`, or `events` through the tap the
        core installs and then the end of body. The CPU of all the hooks."""
        flow = self.flow(body)
        spent = await self.request(flow)
        flow.response = tutils.tresp(status_code=200, content=content)
        flow.response.headers["content-type"] = content_type
        started = time.thread_time()
        await self.hook("responseheaders", flow)
        if events:
            tap = flow.response.stream
            assert callable(tap), "the bridge did not tap the stream"
            for event in events:
                tap(event)
            tap(b"")
        await self.hook("response", flow)
        return spent + time.thread_time() - started


async def median_per_call(rounds: int, count: int, run: Callable[[], Any]) -> float:
    """Median over rounds of the CPU per call, in µs."""
    per_round = []
    for _ in range(rounds):
        gc.collect()
        total = 0.0
        for _ in range(count):
            total += await run()
        per_round.append(total / count)
    return 1e6 * statistics.median(per_round)


async def measure(recording: bool, args: argparse.Namespace, tmp: Path) -> dict[str, float]:
    config = tmp / f"aibridge-{'rec' if recording else 'norec'}.toml"
    config.write_text(("" if recording else "[recording]\nenabled = false\n")
                      + '[providers.openai]\nupstream = "http://127.0.0.1:9"\n')
    runtime = Runtime()
    addons = chain(runtime)
    harness = Harness(Dispatch(addons))
    with taddons.context(*addons) as tctx:
        tctx.options.listen_host = "127.0.0.1"  # no actors: loopback only, as the bench
        tctx.configure(addons[0], bridge_config=str(config))
        await harness.hook("running")
        await harness.tunnel()
        small = payloads.small_body()
        streamed = json.dumps({**json.loads(small), "stream": True}).encode()
        events = payloads.sse_events(args.events)

        def one() -> Awaitable[float]:
            return harness.exchange(small, "application/json", ANSWER)

        def stream() -> Awaitable[float]:
            return harness.exchange(streamed, "text/event-stream", None, events)

        for _ in range(args.warmup):  # warm caches, lazy imports, price lookups
            await one()
            await stream()
        out = {
            "small": await median_per_call(args.rounds, args.requests, one),
            "stream": await median_per_call(args.rounds, max(1, args.requests // 20), stream),
        }
        await harness.hook("done")
        return out


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="scripts/bench hooks", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=1000,
                   help="small requests per round (streams: a twentieth) (1000)")
    p.add_argument("--rounds", type=int, default=5, help="rounds; the median is shown (5)")
    p.add_argument("--events", type=int, default=500, help="SSE events per stream (500)")
    p.add_argument("--warmup", type=int, default=100, help="requests before timing (100)")
    args = p.parse_args(argv)
    if args.requests < 1 or args.rounds < 1 or args.events < 4 or args.warmup < 1:
        p.error("--requests, --rounds, --warmup ≥ 1 and --events ≥ 4")
    mitm_fixes.install()  # as addon/bridge.py does
    tmp = Path(tempfile.mkdtemp(prefix="aibridge-bench-hooks-"))
    # The network benchmark's environment (its central key, no AIBRIDGE_* of the caller's).
    environment = bench.clean_env()
    os.environ.clear()
    os.environ.update(environment, AIBRIDGE_DATA_DIR=str(tmp / "data"))
    print(f"hooks benchmark: the bridge's hooks in the process, event-loop CPU (thread_time), "
          f"median of {args.rounds} rounds; small chat request + JSON answer, and a stream of "
          f"{args.events} SSE events through the tap")
    asyncio.run(report(args, tmp))
    return 0


async def report(args: argparse.Namespace, tmp: Path) -> None:
    for recording in (True, False):
        figures = await measure(recording, args, tmp)
        print(f"  recording {'on ' if recording else 'off'}: small {figures['small']:6.1f} µs "
              f"per request · stream {figures['stream']:7.1f} µs per stream "
              f"({figures['stream'] / args.events:.2f} µs per event)")
