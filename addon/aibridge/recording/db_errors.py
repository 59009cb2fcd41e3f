"""Errors of the recording store, and how failures are judged and described without secrets."""

from __future__ import annotations

import re

from sqlalchemy import exc as sa_exc

from aibridge.recording.paths import mask_url

_ERROR_TEXT_LIMIT = 300
# Provider keys, bearer tokens and `password=` pairs a driver might echo back (defence in
# depth: SQL parameters are already hidden by the engine's hide_parameters).
_SECRET_LIKE = [
    (re.compile(r"\b(sk|rk|pk)-[A-Za-z0-9_\-]{8,}"), r"\1-***"),
    (re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/\-]{8,}=*"), r"\1 ***"),
    (re.compile(r"(?i)\b(password|passwd|pwd|secret|token)(\s*[=:]\s*)(\"[^\"]*\"|'[^']*'|\S+)"),
     r"\1\2***"),
]

_REFUSED_AT_CONNECT = re.compile(
    r'FATAL:\s+(database "[^"]*" does not exist|role "[^"]*" does not exist|'
    r"password authentication failed|no pg_hba\.conf entry|permission denied)")


class RecordingError(Exception):
    """The recording store cannot start; the message says what to fix (no secrets)."""


class MigrationError(RecordingError):
    """The database schema could not be brought up to date."""


def describe_error(error: BaseException) -> str:
    """A one-line, secret-free description: the driver's message without SQL or parameters."""
    if isinstance(error, sa_exc.StatementError) and error.orig is not None:
        # The driver's own error: str(error) would append the SQL statement.
        name, message = type(error.orig).__name__, str(error.orig)
    else:
        name, message = type(error).__name__, str(error)
    message = " ".join(message.split())  # drivers add multi-line hints; one line for logs
    text = mask_url(f"{name}: {message}" if message else name)
    for pattern, replacement in _SECRET_LIKE:
        text = pattern.sub(replacement, text)
    return text if len(text) <= _ERROR_TEXT_LIMIT else text[:_ERROR_TEXT_LIMIT - 3] + "..."


def is_poison(error: BaseException) -> bool:
    """A failure caused by the records themselves (a bad value, a violated constraint), which
    retrying cannot fix. Anything else — connection loss, locks, a broken schema — is retried."""
    if isinstance(error, (sa_exc.IntegrityError, sa_exc.DataError)):
        return True
    if isinstance(error, sa_exc.StatementError) and not isinstance(error, sa_exc.DBAPIError):
        return True  # a value the driver or a type could not convert
    return isinstance(error, (TypeError, ValueError, OverflowError))


def is_misconfigured(error: BaseException) -> bool:
    """The server answered, and said no: wrong credentials (SQLSTATE class 28) or a database
    that does not exist (3D000). Waiting will not help; the configuration must change."""
    orig = getattr(error, "orig", None) or error
    sqlstate = getattr(orig, "sqlstate", None) or ""
    if sqlstate.startswith("28") or sqlstate == "3D000":
        return True
    # libpq reports refusals at connection time as text only (no SQLSTATE).
    return bool(_REFUSED_AT_CONNECT.search(str(orig)))


def is_unreachable(error: BaseException) -> bool:
    """The database could not be reached at all (as opposed to reached and refusing)."""
    if isinstance(error, sa_exc.DBAPIError) and error.connection_invalidated:
        return True
    return isinstance(error, (sa_exc.OperationalError, sa_exc.InterfaceError,
                              sa_exc.DisconnectionError, sa_exc.TimeoutError, OSError))
