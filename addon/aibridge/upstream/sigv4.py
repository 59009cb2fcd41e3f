"""Sign a provider request with the bridge's AWS credentials (SigV4, botocore's signer).

The client signed its request with whatever it had (a dummy key is enough); that signature and
its companions (`X-Amz-Date`, `X-Amz-Security-Token`, `X-Amz-Content-Sha256`) are dropped and
the request, as it goes upstream (host, path, query and body after the bridge's rewrite), is
signed again. Signed are `host`, `content-type` and every `x-amz-*` header: the headers AWS
requires signed and the ones that carry meaning; the bridge's own headers (actor headers,
`Content-Length`) travel unsigned, which AWS accepts.

Runs as the last step of the rewrite: nothing may change the signed parts afterwards.
"""

from __future__ import annotations

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import ReadOnlyCredentials
from mitmproxy import http
from mitmproxy.net.http.url import hostport

# The client's signature and what it signed with: never forwarded with the bridge's.
CLIENT_SIGNATURE = ("authorization", "x-amz-date", "x-amz-security-token",
                    "x-amz-content-sha256")
_SIGNED = ("content-type",)
DEFAULT_REGION = "us-east-1"


def strip_client_signature(request: http.Request) -> None:
    for name in CLIENT_SIGNATURE:
        request.headers.pop(name, None)


def sign(request: http.Request, credentials: ReadOnlyCredentials, *, service: str,
         region: str) -> None:
    """Replace the request's signature with one made with `credentials`."""
    strip_client_signature(request)
    host = request.headers.get("host") or hostport(request.scheme, request.host, request.port)
    request.headers["Host"] = host  # signed: it must be on the wire as signed
    headers = {"host": host}
    for name, value in request.headers.items():
        lower = name.lower()
        if lower in _SIGNED or lower.startswith("x-amz-"):
            headers[lower] = value
    aws = AWSRequest(method=request.method, url=request.url, headers=headers,
                     data=request.raw_content or b"")
    SigV4Auth(credentials, service, region).add_auth(aws)
    for name in ("X-Amz-Date", "X-Amz-Security-Token", "Authorization"):
        if (value := aws.headers.get(name)) is not None:
            request.headers[name] = value
