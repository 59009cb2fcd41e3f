"""What happens when the provider refuses a central key (429, 401, 403).

Non-streaming requests fail over transparently: the addon re-sends the request with the next
key and the client only sees the final answer. A streaming request cannot be re-sent inside its
flow (mitmproxy sends addon-made responses whole), so it is answered with a JSON error that the
official SDKs retry at once (`x-should-retry: true`, `retry-after-ms: 1`); the retry picks the
next key because the refused one is now cooling or dead.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import httpx2
from mitmproxy import http

from aibridge.admission.credential import UpstreamCredential
from aibridge.intercept import (
    OPENAI_ERR_CODE_RATE_LIMIT,
    OPENAI_ERR_TYPE_API,
    OPENAI_ERR_TYPE_RATE_LIMIT,
    ResponseError,
    mask_secret,
    new_response_error,
    response_error_from_key_pool,
)
from aibridge.keys.pool import Key, KeyPoolError
from aibridge.providers import Provider
from aibridge.upstream.resend import resend

REFUSALS = {429: "rate-limited", 401: "rejected as unauthorized", 403: "rejected as forbidden"}


RETRY_NOW = {"x-should-retry": "true", "retry-after-ms": "1"}


@dataclass
class Outcome:
    key: Key  # the last key tried
    response: http.Response | None = None  # the provider's answer that replaces the flow's
    error: ResponseError | None = None  # or the bridge's own error instead
    retry_now: bool = False  # the error invites an immediate retry (streaming failover)
    pool_error: KeyPoolError | None = None  # set when the error is the pool's exhaustion


async def after_response(response: http.Response, provider: Provider,
                         credential: UpstreamCredential, *, streaming: bool,
                         client: Callable[[], httpx2.AsyncClient],
                         request: http.Request) -> Outcome:
    """Mark the key with the provider's answer and fail over if it refused the key. `client`
    gives the client for re-sends, only asked for when there is one: building it costs far more
    than a request."""
    pool, key, attempt = provider.pool, credential.key, credential.attempt
    assert pool is not None and key is not None
    status = _key_status(provider, response)
    pool.mark(key, status, response.headers, body=_error_body(response))
    if not pool.should_fail_over(status):
        return Outcome(key)
    if streaming or attempt is None:
        return _ask_to_retry(provider, key, status)
    while True:
        try:
            key = attempt.next()
        except KeyPoolError as e:
            return Outcome(key, error=response_error_from_key_pool(e), pool_error=e)
        try:
            answer = await resend(client(), request, credential.header,
                                  provider.api.credential.value(key.secret))
        except httpx2.HTTPError as e:
            return Outcome(key, error=new_response_error(
                f"{provider.name}: cannot reach upstream while failing over to key "
                f"{mask_secret(key.secret)}: {type(e).__name__}", OPENAI_ERR_TYPE_API,
                "upstream_unreachable", 502))
        status = _key_status(provider, answer)
        pool.mark(key, status, answer.headers, body=_error_body(answer))
        if not pool.should_fail_over(status):
            return Outcome(key, response=answer)


def _error_body(response: http.Response) -> bytes | None:
    """The decoded body of a 400 or 429, where some providers say that the key was refused
    (Google's API_KEY_INVALID) or how long to wait (Google's RetryInfo)."""
    if response.status_code not in (400, 429) or response.stream:
        return None
    return response.get_content(strict=False)


def _key_status(provider: Provider, response: http.Response) -> int:
    return provider.api.key_status(response.status_code, _error_body(response))


def _ask_to_retry(provider: Provider, key: Key, status: int) -> Outcome:
    pool = provider.pool
    assert pool is not None
    if not pool.has_valid_besides(key):
        exhausted = pool.exhaustion()
        return Outcome(key, error=response_error_from_key_pool(exhausted), pool_error=exhausted)
    return Outcome(key, retry_now=True, error=new_response_error(
        f"{provider.name}: key {mask_secret(key.secret)} was {REFUSALS[status]}; "
        "a retry uses the next key", OPENAI_ERR_TYPE_RATE_LIMIT, OPENAI_ERR_CODE_RATE_LIMIT,
        429 if status == 429 else 503, retry_after=0.001))
