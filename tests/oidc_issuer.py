"""A fake OIDC issuer for tests: signing keys (RSA and EC) whose JWKS a local HTTPS server
serves (a trustme CA; `ca_path` is the file clients trust), and tokens signed with them.

    with Issuer(tmp_path) as issuer:
        token = issuer.token(email="alice@example.com", groups=["ml"])
        config = issuer.config()          # the [auth.oidc] table for it

`fetches` counts JWKS requests (tests assert the request path makes none); `add_key` adds a
key (a rotation), which the server publishes from then on.
"""

from __future__ import annotations

import json
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self

import jwt
import trustme
from cryptography.hazmat.primitives.asymmetric import ec, rsa

ISSUER = "https://sso.example.com/realms/acme"
AUDIENCE = "aibridge"


class Issuer:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.keys: dict[str, Any] = {}  # kid -> private key
        self.published: list[str] = []  # kids in the JWKS
        self.fetches = 0
        self.add_key("rsa-1", rsa.generate_private_key(public_exponent=65537, key_size=2048))
        self.add_key("ec-1", ec.generate_private_key(ec.SECP256R1()))
        ca = trustme.CA()
        cert = ca.issue_cert("127.0.0.1", "localhost")
        self.ca_path = workdir / "issuer-ca.pem"
        ca.cert_pem.write_to_path(str(self.ca_path))
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        cert.configure_cert(context)
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                issuer.fetches += 1
                body = json.dumps(issuer.jwks()).encode()
                self.send_response(200 if self.path == "/jwks" else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def jwks_url(self) -> str:
        return f"https://127.0.0.1:{self.server.server_port}/jwks"

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def add_key(self, kid: str, key: Any) -> None:
        self.keys[kid] = key
        self.published.append(kid)

    def jwks(self) -> dict[str, Any]:
        out = []
        for kid in self.published:
            public = self.keys[kid].public_key()
            if isinstance(public, rsa.RSAPublicKey):
                jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(public))
                jwk["alg"] = "RS256"
            else:
                jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(public))
                jwk["alg"] = "ES256"
            out.append({**jwk, "kid": kid, "use": "sig"})
        return {"keys": out}

    def token(self, *, kid: str = "rsa-1", key: Any = None, alg: str | None = None,
              lifetime: float = 300, **claims: Any) -> str:
        """A token signed with `kid`'s key (or `key`), with iss/aud/exp/iat unless given."""
        now = time.time()
        payload = {"iss": ISSUER, "aud": AUDIENCE, "iat": int(now), "exp": int(now + lifetime),
                   "sub": "user-1", **claims}
        payload = {k: v for k, v in payload.items() if v is not None}
        signer = key if key is not None else self.keys[kid]
        if alg is None:
            alg = "ES256" if isinstance(signer, ec.EllipticCurvePrivateKey) else "RS256"
        return jwt.encode(payload, signer, algorithm=alg, headers={"kid": kid})

    def config(self, **extra: Any) -> str:
        """The `[auth.oidc]` table for this issuer (the CA by absolute path)."""
        lines = [f'issuer = "{ISSUER}"', f'audience = "{AUDIENCE}"',
                 f'jwks_url = "{self.jwks_url}"', f'ca_file = "{self.ca_path}"',
                 'metadata_claims = { Team = "groups", Username = "preferred_username" }']
        lines += [f"{k} = {json.dumps(v)}" for k, v in extra.items()]
        return "[auth.oidc]\n" + "\n".join(lines) + "\n"
