"""Proxy access: who is calling. Proxy credentials on CONNECT (or on every plain-HTTP proxy
request) become a caller, with failures rate-limited (access/failure_limit.py); without them
the answer is 407. The proxy credentials never travel further.

A tunnel's caller is remembered for the tunnel, and checked again against the actors whenever
they change (a reload): a connection whose token was removed or changed is revoked — its next
request gets 407 and `addons/connections.py` closes it. Requests pay one identity comparison
for that; the re-check runs once per reload, over the open connections.
"""

from __future__ import annotations

import hashlib
import logging
import time
import weakref

from mitmproxy import connection, http

from aibridge.access.actors import REALM, parse_proxy_credentials, token_digest
from aibridge.access.failure_limit import AuthFailureLimiter, FailurePolicy
from aibridge.addons.runtime import Runtime, fail_closed
from aibridge.config import AuthConfig
from aibridge.errors.envelope import OPENAI_ERR_TYPE_AUTHENTICATION, new_response_error
from aibridge.errors.shapes import ANTHROPIC_ERRORS
from aibridge.flow.exchange import Caller
from aibridge.settings import Settings

logger = logging.getLogger("aibridge")
MAX_USER_CHARS = 256  # of a presented user name kept as a failure-count key


class ProxyAccess:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.failures = AuthFailureLimiter()
        # Connections whose credentials no longer match the actors: refused, then closed.
        self.revoked: weakref.WeakSet[connection.Client] = weakref.WeakSet()
        # The last caller of each plain-HTTP connection, so a revocation can close it too.
        self.plain_clients: weakref.WeakKeyDictionary[connection.Client, Caller] = (
            weakref.WeakKeyDictionary())
        self._checked: Settings | None = None  # the settings callers were last checked against

    @fail_closed
    def http_connect(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None:
            return
        self.refresh()
        if flow.client_conn in self.revoked:
            flow.response = proxy_auth_required()
            return
        caller = self._from_request(flow)
        if caller is None:
            flow.response = proxy_auth_required()
        else:
            self.runtime.callers[flow.client_conn] = caller

    @fail_closed
    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None:
            return
        self.refresh()
        client = flow.client_conn
        if client in self.revoked:
            flow.request.headers.pop("proxy-authorization", None)
            http1 = flow.request.http_version.startswith("HTTP/1")
            flow.response = credentials_revoked(close=http1)
            return
        if (caller := self.runtime.callers.get(client)) is not None:
            flow.request.headers.pop("proxy-authorization", None)
            if caller.expires is not None and caller.expires <= time.time():
                # A sign-in token outlived by its tunnel: like a revocation, the client must
                # reconnect (with a fresh token) and this connection is closed.
                del self.runtime.callers[client]
                self.revoked.add(client)
                flow.response = credentials_revoked(
                    close=flow.request.http_version.startswith("HTTP/1"),
                    reason="your sign-in token expired; reconnect with a fresh one")
            return
        # A plain-HTTP proxy request (no CONNECT): it authenticates on every request.
        caller = self._from_request(flow)
        if caller is None:
            flow.response = proxy_auth_required()
        else:
            self.runtime.plain_callers[flow] = caller
            self.plain_clients[client] = caller

    def refresh(self) -> list[connection.Client]:
        """After a reload: re-check every remembered caller against the current actors.
        Returns the connections revoked now (callers whose token is gone or changed)."""
        settings = self.runtime.settings_or_none
        if settings is None or settings is self._checked:
            return []
        previous, self._checked = self._checked, settings
        self.failures.configure(failure_policy(settings.config.auth))
        self.failures.shared = settings.shared.sharing if settings.shared else None
        if previous is not None and previous.actors is settings.actors:
            return []
        if settings.actors.missing:
            logger.error(f"aibridge: actors file {settings.actors.source} is missing and "
                         '[auth] on_missing = "deny": every proxy request is refused until it '
                         "is back")
        revoked: list[connection.Client] = []
        names: set[str] = set()
        for table in (self.runtime.callers, self.plain_clients):
            for client, caller in list(table.items()):
                current = recheck(settings, caller)
                if current is None:
                    del table[client]
                    self.revoked.add(client)
                    revoked.append(client)
                    names.add(caller.actor.id)
                elif current != caller:
                    table[client] = current  # same token, new actor entry (id or metadata)
        if revoked:
            logger.warning(f"aibridge: actors changed: {len(revoked)} open connection(s) of "
                           f"{', '.join(sorted(names))} lost their proxy credentials; "
                           "refusing and closing them")
        return revoked

    def _from_request(self, flow: http.HTTPFlow) -> Caller | None:
        user, token = parse_proxy_credentials(flow.request.headers.get("proxy-authorization"))
        flow.request.headers.pop("proxy-authorization", None)
        return self.authenticate_client(flow, token, user)

    def authenticate_client(self, flow: http.HTTPFlow, token: str | None,
                            user: str = "") -> Caller | None:
        """Proxy credentials → caller, with failures rate-limited per (address, user name),
        per address and overall (access/failure_limit.py)."""
        self.refresh()  # the current limits, also when called from another addon first
        settings = self.runtime.settings
        if not settings.actors.requires_auth:
            return authenticate(settings, token)
        address = flow.client_conn.peername[0] if flow.client_conn.peername else "?"
        user = user[:MAX_USER_CHARS]
        if refusal := self.failures.refused(address, user):
            logger.debug(f"aibridge: proxy login from {address} as {user_hint(user)} not "
                         f"checked: the {refusal} failure limit is reached")
            return None
        caller = authenticate(settings, token)
        if caller is not None:
            self.failures.succeeded(address, user)
            return caller
        reached = self.failures.failed(address, user)
        logger.info(f"aibridge: proxy authentication failed for "
                    f"{flow.request.host}:{flow.request.port} from {address} as "
                    f"{user_hint(user)}")
        policy = self.failures.policy
        for kind in reached:
            what = {"user": f"{address} as {user_hint(user)} failed proxy authentication "
                            f"{policy.per_user} times",
                    "address": f"{address} failed proxy authentication {policy.per_address} "
                               "times across user names",
                    "global": f"proxy authentication failed {policy.global_limit} times in "
                              "all"}[kind]
            whom = {"user": "refusing that user name from that address",
                    "address": "refusing that address except for user names that logged in "
                               "from it before",
                    "global": "refusing every login except from address and user name pairs "
                              "that logged in before"}[kind]
            logger.warning(f"aibridge: {what} within {policy.window:g}s; {whom} for a while")
        return None


def failure_policy(auth: AuthConfig) -> FailurePolicy:
    return FailurePolicy(per_user=auth.max_failures_per_user,
                         per_address=auth.max_failures_per_address,
                         global_limit=auth.max_failures_global, window=auth.failure_window,
                         known_ttl=auth.known_login_ttl)


def authenticate(settings: Settings, token: str | None) -> Caller | None:
    digest = token_digest(token) if token else None
    if not settings.actors.requires_auth:
        return Caller(settings.local_actor, digest)
    actor = settings.actors.authenticate(token)
    return Caller(actor, digest, settings.actors.expiry(digest)) if actor else None


def recheck(settings: Settings, caller: Caller) -> Caller | None:
    """The caller a connection authenticated earlier is now, or None when revoked."""
    if not settings.actors.requires_auth:
        return Caller(settings.local_actor, caller.token)
    actor = settings.actors.by_token_digest(caller.token)
    if actor is None:
        return None
    return caller if actor == caller.actor else Caller(actor, caller.token, caller.expires)


def user_hint(user: str) -> str:
    """A user name for the log: a short hash, since people do put tokens in that slot."""
    if not user:
        return "no user name"
    return f"user #{hashlib.sha256(user.encode('utf-8', 'surrogateescape')).hexdigest()[:8]}"


def proxy_auth_required() -> http.Response:
    return http.Response.make(
        407, b"Proxy Authentication Required: set HTTPS_PROXY=http://<you>:<token>@host:port\n",
        {"Proxy-Authenticate": f'Basic realm="{REALM}"', "Proxy-Connection": "close",
         "Content-Type": "text/plain"})


def credentials_revoked(*, close: bool, reason: str = "your proxy credentials were revoked or "
                        "changed; reconnect with valid ones") -> http.Response:
    """Inside a tunnel the client reads an API answer: JSON both SDKs parse. `close` (HTTP/1.1)
    ends the connection after it, so the client's next attempt opens a new one with the
    credentials it has now (addons/connections.py closes any other kind soon after)."""
    error = new_response_error(f"aibridge: {reason}", OPENAI_ERR_TYPE_AUTHENTICATION,
                               "proxy_credentials_revoked", 407)
    headers = {"Proxy-Authenticate": f'Basic realm="{REALM}"'}
    if close:
        headers["Connection"] = "close"
    return error.to_response(ANTHROPIC_ERRORS, headers=headers)
