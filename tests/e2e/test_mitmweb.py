"""mitmweb with the bridge, looked at through a real headless Chromium (Debian's `chromium`,
driven by Selenium through Debian's `chromedriver`; `scripts/install-chromium` installs both).

A streaming and a non-streaming request go through a real `mitmweb`; then the browser logs in,
opens the streaming flow and reads what a person would: the flow list's comment, the request
headers, the SSE view of the response and the comment tab. The actor and the masked key hint
must be there, the real keys nowhere (page source, REST `/flows`, the flow dump). A screenshot
is kept in `test-artifacts/mitmweb-flow.png`.

Nothing is skipped: without Chromium the test fails and says how to install it.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import secrets
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Self

import pytest

from scripts.mitmlaunch import MITMWEB, LaunchError
from tests.e2e.harness import (
    ACTORS_TOML,
    ANTHROPIC_KEY,
    OPENAI_KEY,
    ROOT,
    BridgeProcess,
    provider_config,
)
from tests.fakeprovider import TEXT, FakeProvider

pytestmark = pytest.mark.timeout(240)

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ARTIFACTS = ROOT / "test-artifacts"
SCREENSHOT = ARTIFACTS / "mitmweb-flow.png"
OPENAI_HINT = "sk-c...cdef"  # OPENAI_KEY masked
ANTHROPIC_HINT = "sk-a...efgh"  # ANTHROPIC_KEY masked
WAIT = 20.0  # seconds, for every wait on mitmweb or the browser
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--no-proxy-server", "--window-size=1600,1000",
)
# The flow list with the comment column: the bridge's one-line summary at a glance.
COLUMNS = ("tls", "icon", "path", "method", "status", "size", "time", "comment")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MitmwebProcess(BridgeProcess):
    """BridgeProcess running `mitmweb` (headless) instead of `mitmdump`."""

    def __init__(self, workdir: Path, config: str) -> None:
        super().__init__(workdir, config, program=MITMWEB, log_name="mitmweb.log",
                         save_flows=False)
        self.password = secrets.token_urlsafe(16)
        self.web_port = 0
        self._bridge_args = list(self.args)

    @property
    def web_url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    def ready(self, log: str) -> bool:
        return f"Web server listening at {self.web_url}/" in log

    def start(self, timeout: float = WAIT) -> Self:
        if not MITMWEB.exists():
            raise RuntimeError(f"{MITMWEB} is missing: run scripts/setup")
        columns = [arg for c in COLUMNS for arg in ("--set", f"web_columns={c}")]
        for _attempt in range(3):  # the free web port may be taken before mitmweb binds it
            self.web_port = free_port()
            self.args = [*self._bridge_args, "--web-host", "127.0.0.1",
                         "--web-port", str(self.web_port), "--no-web-open-browser",
                         "--set", f"web_password={self.password}",
                         "--set", "store_streamed_bodies=true", *columns]
            try:
                return super().start(timeout)
            except LaunchError:
                if "address already in use" not in self.log().lower():
                    raise
        raise RuntimeError(f"mitmweb found no free web port:\n{self.log()}")

    def rest(self, path: str) -> bytes:
        """GET from mitmweb's REST API with the password as bearer token (no proxy)."""
        request = urllib.request.Request(self.web_url + path,
                                         headers={"Authorization": f"Bearer {self.password}"})
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(request, timeout=WAIT) as response:
            return response.read()

    def flows(self) -> list[dict[str, Any]]:
        return json.loads(self.rest("/flows"))


@pytest.fixture(scope="module")
def mitmweb(fake: FakeProvider, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[MitmwebProcess]:
    workdir = Path(tmp_path_factory.mktemp("mitmweb"))
    (workdir / "actors.toml").write_text(ACTORS_TOML)
    process = MitmwebProcess(workdir, provider_config(fake.url))
    try:
        yield process.start()
    finally:
        process.stop()


@contextlib.contextmanager
def chromium(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Headless Chromium under chromedriver; fails the test (never skips) when it cannot start.
    Started inside the test, not in a fixture, so that is a failure rather than an error."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        pytest.fail(f"{', '.join(missing)} missing: run scripts/install-chromium (Debian's "
                    "chromium and chromium-driver packages)", pytrace=False)
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError as e:
        pytest.fail(f"selenium is not installed ({e}): run scripts/setup", pytrace=False)
    # Selenium Manager must never try to download a browser or driver: both are given.
    monkeypatch.setenv("SE_OFFLINE", "true")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    driver_log = tmp_path / "chromedriver.log"
    service = Service(executable_path=str(CHROMEDRIVER), log_output=str(driver_log))
    try:
        driver = webdriver.Chrome(options=options, service=service)
    except Exception as e:
        log = driver_log.read_text(errors="replace")[-3000:] if driver_log.exists() else ""
        pytest.fail(f"headless Chromium did not start: {e}\n{log}", pytrace=False)
    driver.set_page_load_timeout(WAIT)
    driver.set_script_timeout(WAIT)
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(what: str, check: Callable[[], Any], timeout: float = WAIT) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            if result := check():
                return result
        except Exception as e:  # an element not there yet, a page still loading
            last = e
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}"
                         + (f" (last error: {last!r})" if last else ""))


def bridged(flows: list[dict[str, Any]], path: str) -> dict[str, Any] | None:
    for flow in flows:
        if flow.get("request", {}).get("path", "").startswith(path) and flow.get("comment"):
            return flow
    return None


def test_mitmweb_shows_actor_hint_and_sse_view_never_the_key(
        mitmweb: MitmwebProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # -- traffic: one streaming chat completion, one non-streaming Anthropic message ------------
    with mitmweb.openai(timeout=WAIT) as client:
        stream = client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "hi"}], stream=True,
            stream_options={"include_usage": True})
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == TEXT
    with mitmweb.anthropic(timeout=WAIT) as client:
        message = client.messages.create(model="claude-sonnet-5", max_tokens=16,
                                         messages=[{"role": "user", "content": "hi"}])
        assert message.content[0].text == TEXT
    with mitmweb.openai(timeout=WAIT) as client:  # refused by the bridge: a ⛔ row
        bad = client._client.post("https://api.openai.com/v1/chat/completions?bad=json",
                                  content=b"{not json",
                                  headers={"content-type": "application/json"})
        assert bad.status_code == 400

    # The comments are written when each exchange is done.
    def done() -> tuple[dict, dict] | None:
        flows = mitmweb.flows()
        chat, messages = bridged(flows, "/v1/chat/completions"), bridged(flows, "/v1/messages")
        return (chat, messages) if chat and messages else None

    chat, messages = wait_for("both bridged flows with a comment", done)
    # gpt-4o: 8 uncached + 3 cached input, 7 output; claude-sonnet-5: 11 input, 3 cache
    # read, 2 cache write, 7 output (tests/unit/test_pricing.py checks the arithmetic).
    assert chat["comment"] == (f"alice · gpt-4o · ok · 11→7 tok · $0.0000938 · openai · "
                               f"key {OPENAI_HINT}")
    assert messages["comment"] == (f"alice · claude-sonnet-5 · ok · 11→7 tok · $0.0000976 · "
                                   f"anthropic · key {ANTHROPIC_HINT}")
    refused = bridged(mitmweb.flows(), "/v1/chat/completions?bad=json")
    assert refused is not None and refused["comment"].startswith("alice · rejected 400 · ")
    assert refused["marked"] == "⛔"

    # -- REST: no key in the flow list, the flow dump or the options; the SSE view -------------
    listing = mitmweb.rest("/flows").decode()
    dump = mitmweb.rest("/flows/dump")
    options = mitmweb.rest("/options.json").decode()
    for key in (OPENAI_KEY, ANTHROPIC_KEY):
        assert key not in listing
        assert key.encode() not in dump
        assert key not in options
    assert OPENAI_HINT in listing
    sse = json.loads(mitmweb.rest(f"/flows/{chat['id']}/response/content/sse.json"))
    assert sse["view_name"] == "SSE", f"the addon did not register the SSE contentview: {sse}"
    sse_text = sse["text"]
    assert "model: gpt-4o" in sse_text
    assert "usage: input 11 · output 7 · cache read 3 · cache write 0" in sse_text
    assert f"text: |-\n  {TEXT}" in sse_text
    auto = json.loads(mitmweb.rest(f"/flows/{chat['id']}/response/content/auto.json"))
    assert auto["view_name"] == "SSE", "the SSE view is not chosen for text/event-stream"

    # -- the browser: log in, open the streamed flow, read it as a person would ---------------
    with chromium(tmp_path, monkeypatch) as browser:
        try:
            pages = look_at_flow(browser, mitmweb)
        except Exception:
            ARTIFACTS.mkdir(exist_ok=True)
            browser.save_screenshot(str(ARTIFACTS / "mitmweb-failure.png"))
            (ARTIFACTS / "mitmweb-failure.html").write_text(browser.page_source)
            raise
    for key in (OPENAI_KEY, ANTHROPIC_KEY):
        for name, page in pages.items():
            assert key not in page, f"a real key is visible on the {name} page"
    assert SCREENSHOT.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert SCREENSHOT.stat().st_size > 10_000


def look_at_flow(browser: Any, mitmweb: MitmwebProcess) -> dict[str, str]:
    """Open the chat flow's Request, Response and Comment tabs; check what each shows and keep
    a screenshot of the SSE view. Returns every page's source and text, by tab."""
    from selenium.webdriver.common.by import By

    def detail() -> str:
        return browser.find_element(By.CLASS_NAME, "flow-detail").text

    def open_tab(name: str, shows: Callable[[str], bool]) -> str:
        wait_for(f"the {name} tab", lambda: browser.find_element(
            By.XPATH, f"//div[contains(@class,'flow-detail')]//nav//a[normalize-space()='{name}']"
        )).click()
        text = wait_for(f"the {name} tab's content", lambda: (t if shows(t := detail()) else None))
        pages[name] = browser.page_source + "\n" + browser.find_element(By.TAG_NAME, "body").text
        return text

    pages: dict[str, str] = {}
    browser.get(f"{mitmweb.web_url}/?token={mitmweb.password}")
    row = wait_for("the chat flow in the flow list", lambda: browser.find_element(
        By.XPATH, "//div[contains(@class,'flow-table')]//tr[contains(., 'chat/completions')]"))
    pages["flow list"] = browser.page_source
    # The comment column is narrow and has no tooltip: what shows must name who, which model
    # and whether it worked.
    visible = visible_comment(browser, row)
    assert visible.startswith("alice · gpt-4o · ok"), visible
    refused = browser.find_element(
        By.XPATH, "//div[contains(@class,'flow-table')]//tr[contains(., 'bad=json')]")
    assert visible_comment(browser, refused).startswith("alice · rejected 400")
    assert drawn_in_colour(refused.find_element(By.CLASS_NAME, "marker")), \
        "the ⛔ marker is not drawn (no emoji font? run scripts/install-chromium)"
    row.click()

    request = open_tab("Request", lambda text: OPENAI_HINT in text)
    assert re.search(r"x-ai-bridge-actor-id:?\s+alice", request, re.I), request  # sent upstream
    assert re.search(rf"authorization:?\s+Bearer {re.escape(OPENAI_HINT)}", request, re.I), request

    response = open_tab("Response", lambda text: "# SSE" in text and TEXT in text)
    assert "OpenAI Chat Completions (flow)" in response
    assert f"text: |-\n  {TEXT}" in response
    assert "usage: input 11 · output 7 · cache read 3 · cache write 0" in response
    SCREENSHOT.parent.mkdir(exist_ok=True)
    SCREENSHOT.unlink(missing_ok=True)
    assert browser.save_screenshot(str(SCREENSHOT))

    comment = open_tab("Comment", lambda text: "alice ·" in text)
    assert f"key {OPENAI_HINT}" in comment
    return pages


def visible_comment(browser: Any, row: Any) -> str:
    """The leading part of a row's comment that fits inside its cell, measured by the browser:
    the longest prefix of the cell's text whose rendered width is within the cell."""
    from selenium.webdriver.common.by import By

    cell = row.find_element(By.CLASS_NAME, "col-comment")
    return browser.execute_script("""
        const cell = arguments[0], text = cell.firstChild;
        if (!text) return "";
        const box = cell.getBoundingClientRect(), range = document.createRange();
        let fits = 0;
        for (let n = 1; n <= text.length; n++) {
            range.setStart(text, 0); range.setEnd(text, n);
            if (range.getBoundingClientRect().right > box.right) break;
            fits = n;
        }
        return text.textContent.slice(0, fits);""", cell)


def drawn_in_colour(element: Any) -> bool:
    """Whether an element's pixels hold a saturated colour: an emoji is drawn in colour, while
    a missing glyph is an empty grey box."""
    from PIL import Image

    image = Image.open(io.BytesIO(element.screenshot_as_png)).convert("RGB")
    return any(max(p) - min(p) > 120 for p in image.get_flattened_data())
