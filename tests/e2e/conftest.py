from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import ACTORS_TOML, BridgeProcess, provider_config
from tests.fakeprovider import FakeProvider


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeProvider]:
    with FakeProvider() as provider:
        yield provider


@pytest.fixture(autouse=True)
def _fresh_fake(request: pytest.FixtureRequest) -> None:
    if "fake" in request.fixturenames:
        request.getfixturevalue("fake").clear()


@pytest.fixture(scope="module")
def make_bridge(tmp_path_factory: pytest.TempPathFactory
                ) -> Iterator[Callable[..., BridgeProcess]]:
    started: list[BridgeProcess] = []

    def make(config: str, *, actors: str | None = ACTORS_TOML, **kw) -> BridgeProcess:
        workdir = Path(tmp_path_factory.mktemp("bridge"))
        if actors is not None:
            (workdir / "actors.toml").write_text(actors)
        bridge = BridgeProcess(workdir, config, **kw)
        started.append(bridge)
        return bridge.start()

    yield make
    for bridge in started:
        bridge.stop()


@pytest.fixture(scope="module")
def bridge(fake: FakeProvider, make_bridge: Callable[..., BridgeProcess]) -> BridgeProcess:
    """The default set-up: actors file, central keys for both providers, Anthropic in auto."""
    return make_bridge(provider_config(fake.url))
