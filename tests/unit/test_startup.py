"""Start-up refusals: the one line, and exit-at-start-up versus OptionsError-later."""

from __future__ import annotations

import io

import pytest
from mitmproxy import exceptions
from mitmproxy.addons.errorcheck import ErrorCheck
from mitmproxy.test import taddons

from aibridge.addons import startup
from aibridge.config import ConfigError


@pytest.mark.parametrize(("message", "line"), [
    ("bad thing; fix it", "aibridge: bad thing; fix it"),
    ("aibridge: already prefixed", "aibridge: already prefixed"),
    ("aibridge: aibridge:  recording: twice", "aibridge: recording: twice"),
    ("first line\n  second line\r\nthird", "aibridge: first line; second line; third"),
    ("tabs\tand   spaces", "aibridge: tabs and spaces"),
    ("", "aibridge: start-up refused (no reason given)"),
    ("aibridge:", "aibridge: start-up refused (no reason given)"),
    (ConfigError("config x.toml: y: bad"), "aibridge: config x.toml: y: bad"),
])
def test_refusal_line_is_one_prefixed_line(message, line):
    assert startup.refusal_line(message) == line
    assert "\n" not in line and "\r" not in line


def test_at_start_up_the_refusal_ends_the_process_non_zero():
    error = startup.refusal("no keys", starting=True)
    assert isinstance(error, SystemExit) and isinstance(error, startup.StartupRefused)
    assert error.code == startup.EXIT_CONFIG != 0
    assert error.line == "aibridge: no keys"


def test_later_the_refusal_is_an_options_error_mitmproxy_rolls_back():
    error = startup.refusal("aibridge: no keys", starting=False)
    assert isinstance(error, exceptions.OptionsError)
    assert str(error) == "aibridge: no keys"


def test_start_up_is_the_errorcheck_window():
    assert not startup.is_starting(None)
    with taddons.context() as tctx:
        assert not startup.is_starting(tctx.master)  # no errorcheck: tests, custom masters
        errorcheck = ErrorCheck()
        tctx.master.addons.add(errorcheck)
        try:
            assert startup.is_starting(tctx.master)
        finally:
            errorcheck.finish()  # what Master.run does after the running hook
        assert not startup.is_starting(tctx.master)


def test_refuse_at_start_up_writes_exactly_the_line_then_exits():
    stderr = io.StringIO()
    with taddons.context() as tctx:
        errorcheck = ErrorCheck()
        tctx.master.addons.add(errorcheck)
        try:
            with pytest.raises(startup.StartupRefused) as raised:
                startup.refuse("aibridge: refusing to run an open proxy on 0.0.0.0:8080",
                               master=tctx.master, stream=stderr)
        finally:
            errorcheck.finish()
    assert stderr.getvalue() == "aibridge: refusing to run an open proxy on 0.0.0.0:8080\n"
    assert raised.value.code == startup.EXIT_CONFIG


def test_refuse_later_raises_options_error_and_prints_nothing():
    stderr = io.StringIO()
    with taddons.context() as tctx, pytest.raises(exceptions.OptionsError) as raised:
        startup.refuse("x", master=tctx.master, stream=stderr)
    assert str(raised.value) == "aibridge: x"
    assert stderr.getvalue() == ""


@pytest.mark.parametrize("error", [ConfigError("bad toml"),
                                   exceptions.OptionsError("aibridge: bad toml")])
def test_refusing_turns_config_and_options_errors_into_a_refusal(error):
    with (taddons.context() as tctx, pytest.raises(exceptions.OptionsError) as raised,
          startup.refusing(tctx.master)):
        raise error
    assert str(raised.value) == "aibridge: bad toml"


def test_refusing_leaves_other_errors_alone():
    with taddons.context() as tctx, pytest.raises(KeyError), startup.refusing(tctx.master):
        raise KeyError("a bug, not a configuration problem")
