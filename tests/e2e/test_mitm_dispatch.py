"""mitmproxy's hook dispatch as the bridge replaces it (addons/mitm_dispatch), in a real mitmdump
with other addons loaded beside the bridge: the replacement is what runs, an addon that fails
is logged as mitmproxy logs it (with its traceback) and costs neither the request nor the
addons after it, and every later addon still sees every hook."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e.harness import ROOT, BridgeProcess, provider_config
from tests.fakeprovider import FakeProvider

pytestmark = pytest.mark.timeout(120)

FAILING = '''
class Failing:
    def request(self, flow):
        if flow.request.path.startswith("/v1/chat/completions"):
            raise RuntimeError("deliberate failure in a neighbouring addon")

addons = [Failing()]
'''

# Notes what it sees in a JSON-lines file: which dispatch runs, then each hook of each flow.
WATCHING = '''
import json
from mitmproxy import ctx

OUT = {out!r}

def note(**fields):
    with open(OUT, "a") as f:
        f.write(json.dumps(fields) + "\\n")

class Watching:
    def running(self):
        note(dispatch=type(ctx.master.addons).trigger_event.__module__)

    def requestheaders(self, flow):
        note(hook="requestheaders", path=flow.request.path)

    def request(self, flow):
        note(hook="request", path=flow.request.path)

    async def response(self, flow):
        note(hook="response", path=flow.request.path, status=flow.response.status_code)

addons = [Watching()]
'''


# Loaded after bridge.py, which installed the replacement: puts mitmproxy's own back.
ORIGINAL = """
from aibridge.addons import mitm_dispatch

mitm_dispatch.uninstall()
"""


def _run(tmp_path: Path, fake: FakeProvider, make_bridge: Callable[..., BridgeProcess],
         original: bool) -> tuple[str, list[tuple[str, int | None]], BridgeProcess]:
    """Two chat requests with a failing and a watching addon beside the bridge: which dispatch
    ran, the hooks the watching addon saw, and the bridge process (for its log)."""
    tmp_path.mkdir()
    notes = tmp_path / "notes.jsonl"
    scripts = []
    for name, text in [("original.py", ORIGINAL if original else None), ("failing.py", FAILING),
                       ("watching.py", WATCHING.format(out=str(notes)))]:
        if text is not None:
            (tmp_path / name).write_text(text)
            scripts += ["-s", str(tmp_path / name)]
    bridge = make_bridge(provider_config(fake.url), args=scripts)
    for i in range(2):
        reply = bridge.openai(timeout=10).chat.completions.create(
            model=f"gpt-dispatch-{i}", messages=[{"role": "user", "content": "hi"}])
        assert reply.choices[0].message.content == "Hello from fake"
    seen = [json.loads(line) for line in notes.read_text().splitlines()]
    hooks = [(n["hook"], n.get("status")) for n in seen[1:]
             if n.get("path", "").startswith("/v1/chat/completions")]
    return seen[0]["dispatch"], hooks, bridge


def test_the_same_hooks_and_errors_as_mitmproxys_own_dispatch(
        tmp_path: Path, fake: FakeProvider,
        make_bridge: Callable[..., BridgeProcess]) -> None:
    runs = {}
    for original in (True, False):
        fake.clear()
        dispatch, hooks, bridge = _run(tmp_path / str(original), fake, make_bridge, original)
        assert len(fake.requests) == 2  # the failing addon cost no request
        log = bridge.wait_for_log("Addon error: deliberate failure in a neighbouring addon").string
        # The traceback starts at the addon's own code, as mitmproxy's dispatch logs it.
        tail = log[log.index("Addon error: deliberate failure"):]
        assert "failing.py" in tail and "in request" in tail
        assert "addonmanager.py" not in tail.split("RuntimeError")[0]
        assert "mitm_dispatch.py" not in tail.split("RuntimeError")[0]
        runs[original] = (dispatch, hooks, log.count("Addon error: deliberate failure"))
    assert runs[True][0] == "mitmproxy.addonmanager"
    assert runs[False][0] == "aibridge.addons.mitm_dispatch"
    assert runs[False][1:] == runs[True][1:]
    # What both do: all scripts (-s) are children of one addon, mitmproxy's script loader, and
    # an exception in one ends that addon's turn for the event, so the watching script, loaded
    # after the failing one, misses `request` but sees every other hook.
    assert runs[False][1] == [("requestheaders", None), ("response", 200)] * 2
    assert runs[False][2] == 2
    assert ORDER_WARNING not in bridge.log()  # the bridge's script came first


ORDER_WARNING = "loaded before the bridge's script"


def test_a_script_loaded_before_the_bridge_is_warned_about(
        tmp_path: Path, fake: FakeProvider,
        make_bridge: Callable[..., BridgeProcess]) -> None:
    """Such a script's failure would skip the bridge for that event (the test above shows the
    skipping): the operator is told at start-up, and requests still work."""
    failing = tmp_path / "failing.py"
    failing.write_text(FAILING.replace("/v1/chat/completions", "/nothing-the-test-sends"))
    bridge = make_bridge(provider_config(fake.url), script=str(failing),
                         args=["-s", str(ROOT / "addon" / "bridge.py")])
    line = bridge.wait_for_log(rf"aibridge: failing\.py is {ORDER_WARNING}[^\n]*").group(0)
    assert "Load the bridge's script first" in line
    reply = bridge.openai(timeout=10).chat.completions.create(
        model="gpt-order", messages=[{"role": "user", "content": "hi"}])
    assert reply.choices[0].message.content == "Hello from fake"
