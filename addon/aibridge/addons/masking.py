"""Masking: no credential is kept in a flow, whatever way it ends (`upstream.scrub` does the
masking). Last in the chain, so every other addon has read the request first; and, as a script
addon, ahead of mitmproxy's own `save` (`-w`), `savehar`, mitmdump's flow printer and mitmweb's
view, which come after the script loader.

- requestheaders: mitmweb lists a flow as soon as its headers arrive. A refused request is
  masked for good; one that goes on shows hints until it is forwarded: the core puts the real
  values back for provider flows (`Runtime.hidden`), this addon for every other flow. Only
  where a live view lists flows (mitmweb, mitmproxy's console: the `view` addon): mitmdump
  shows a flow at its end, and hiding and putting back cost every request ≈ 15 µs there.
- request: a request refused with its body (bad JSON, 415, 413...) is masked for good.
- update: mitmproxy announces a flow after each hook and mitmweb pushes it to the browser; a
  request on its way upstream holds its credentials, so its announcement stops here (unless
  mitmweb's intercept paused it: it must stay visible to be resumed).
- responseheaders: the request is on the wire; it is masked.
- response, error, a kill from mitmweb: masked, and an answer that echoes a credential is
  redacted.
- done (shutdown, after Configuration gave in-flight requests `shutdown_grace`): what is still
  in flight is masked before the save addon writes it.

mitmproxy writes the request to the upstream connection from the flow itself, so from the
request hook to the response headers the flow holds what it sends; mitmweb's REST API (a page
load) can show it then.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence

from mitmproxy import ctx, exceptions, http
from mitmproxy import flow as mflow

from aibridge.addons.runtime import Runtime
from aibridge.upstream import scrub


class Masking:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        # Flows forwarded with their credentials and not over yet (shutdown masks them).
        self.forwarded: weakref.WeakSet[http.HTTPFlow] = weakref.WeakSet()
        # Secrets masked when the answer began, to redact from that answer once it is whole.
        self.echoes: weakref.WeakKeyDictionary[http.HTTPFlow, list[str]] = (
            weakref.WeakKeyDictionary())
        self.live_view: bool | None = None  # see _live_view

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None or flow.error is not None:
            self._end(flow)  # refused: nothing of it goes upstream
        elif flow.request.stream:
            self.forwarded.add(flow)  # its headers leave right after this hook, as they are
        elif self._live_view() and (hidden := scrub.hide(flow.request)) is not None:
            self.runtime.hidden[flow] = hidden

    def request(self, flow: http.HTTPFlow) -> None:
        hidden = self.runtime.hidden.pop(flow, None)
        if flow.response is not None or flow.error is not None:
            self._end(flow)
            return
        if hidden is not None:  # not a provider flow: the core did not forward it
            scrub.reveal(flow.request, hidden)
        if scrub.holds_credentials(flow.request):
            self.forwarded.add(flow)

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        """Its answer has begun, so the request is on the wire: everything in it becomes a hint
        (the core scrubbed the key it set already); the secrets wait to redact an echo."""
        if flow in self.forwarded:
            self.forwarded.discard(flow)
            if secrets := scrub.mask_flow(flow):
                self.echoes[flow] = secrets

    def response(self, flow: http.HTTPFlow) -> None:
        self._end(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        self._end(flow)

    def update(self, flows: Sequence[mflow.Flow]) -> None:
        """mitmproxy announces a flow after each of its hooks; mitmweb's view pushes it to the
        browser. A flow on its way upstream holds its credentials: that announcement stops here
        (mitmweb shows the flow again at its answer). Not for a flow mitmweb's intercept paused:
        hidden, it could not be resumed. A flow killed by a command is never forwarded, or is
        over: it is masked for good."""
        halt = False
        for f in flows:  # one flow, as good as always: plain loop, no generator
            if f.error is not None and isinstance(f, http.HTTPFlow) \
                    and f.error.msg == mflow.Error.KILLED_MESSAGE:
                self._end(f)
            elif f in self.forwarded and not f.intercepted:
                halt = True
        if halt:
            raise exceptions.AddonHalt

    def done(self) -> None:
        for f in list(self.forwarded):
            self._end(f)
        self.runtime.hidden.clear()
        self.echoes.clear()

    def _live_view(self) -> bool:
        """Whether mitmproxy runs a view that lists flows while they are in flight (asked once:
        the master's addons are there before the first request)."""
        if self.live_view is None:
            self.live_view = ctx.master.addons.get("view") is not None
        return self.live_view

    def _end(self, flow: http.HTTPFlow) -> None:
        self.runtime.hidden.pop(flow, None)
        self.forwarded.discard(flow)
        secrets = [*scrub.mask_flow(flow), *self.echoes.pop(flow, ())]
        scrub.redact(flow.response, secrets)
