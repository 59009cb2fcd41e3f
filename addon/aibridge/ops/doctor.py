"""Check this machine's client set-up against a running bridge, step by step as a client goes:

  1. the proxy URL (--proxy, or HTTPS_PROXY / https_proxy, token as the password);
  2. the proxy answers on that address (TCP);
  3. it accepts the token (a CONNECT gets 200, not 407);
  4. the CA it signs provider hosts with is the one this machine's CA variables point at
     (NODE_EXTRA_CA_CERTS, SSL_CERT_FILE, CODEX_CA_CERTIFICATE, REQUESTS_CA_BUNDLE; each one
     that is set gets a verified TLS handshake through the bridge);
  5. every provider host is decrypted (its certificate is minted by the bridge CA, so the
     bridge, not a tunnel, answers);
  6. a central key is available for the providers that have them, and the bridge is ready.

One line per check; the first failure says how to fix it and ends with exit status 1.
The token and keys are never printed, only masked hints.
"""

from __future__ import annotations

import argparse
import base64
import errno
import http.client
import json
import os
import socket
import ssl
import sys
import time
import urllib.request
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import unquote, urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.utils import CryptographyDeprecationWarning

from aibridge.intercept.credential import mask_secret
from aibridge.observe import ca as ca_names

CA_VARIABLES = ("NODE_EXTRA_CA_CERTS", "SSL_CERT_FILE", "CODEX_CA_CERTIFICATE",
                "REQUESTS_CA_BUNDLE")
# These replace the client's trust store; NODE_EXTRA_CA_CERTS adds to Node's own roots.
REPLACING = {"SSL_CERT_FILE", "CODEX_CA_CERTIFICATE", "REQUESTS_CA_BUNDLE"}
PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy")
HEALTH_URL = "http://aibridge.health/healthz"
MAX_HEAD = 64 * 1024  # bytes of a CONNECT answer's head read at most
FEW_CERTS = 3  # a trust file this small holds no public roots


class Failed(Exception):
    """A check failed; the message and fix have been printed."""


@dataclass(frozen=True)
class ProxyUrl:
    host: str
    port: int
    user: str
    token: str | None
    source: str  # "--proxy" or the variable it came from

    def authorization(self) -> str | None:
        if self.token is None:
            return None
        pair = f"{self.user}:{self.token}" if self.user else f"{self.token}:"
        return "Basic " + base64.b64encode(pair.encode()).decode()

    def shown(self) -> str:
        creds = ""
        if self.token is not None:
            creds = f"{self.user}:{mask_secret(self.token)}@" if self.user else \
                f"{mask_secret(self.token)}@"
        return f"http://{creds}{self.host}:{self.port}"


def parse_proxy(text: str, source: str) -> ProxyUrl:
    """A proxy URL as clients read it; ValueError says what is wrong with it."""
    raw = text.strip()
    if "://" not in raw:
        raw = "http://" + raw  # curl and most clients assume http:// for a bare host:port
    parts = urlsplit(raw)
    if parts.scheme.lower() != "http":
        raise ValueError(f"the scheme is {parts.scheme}://; the bridge is an HTTP proxy "
                         "(http://, TLS happens inside the tunnel)")
    if not parts.hostname:
        raise ValueError("there is no host in it")
    try:
        port = parts.port or 80
    except ValueError:
        raise ValueError("its port is not a number from 1 to 65535") from None
    user = unquote(parts.username or "")
    password = unquote(parts.password) if parts.password is not None else None
    if password:  # http://me:TOKEN@host
        return ProxyUrl(parts.hostname, port, user, password, source)
    # http://TOKEN@host: the bridge reads a lone user part as the token
    return ProxyUrl(parts.hostname, port, "", user or None, source)


# -- talking to the bridge ------------------------------------------------------------------------


class ConnectRefused(Exception):
    def __init__(self, status: int, reason: str, body: str) -> None:
        super().__init__(f"{status} {reason}")
        self.status, self.reason, self.body = status, reason, body


def open_tunnel(proxy: ProxyUrl, host: str, timeout: float, port: int = 443) -> socket.socket:
    """A CONNECT tunnel through the bridge; ConnectRefused when it answers anything but 200."""
    sock = socket.create_connection((proxy.host, proxy.port), timeout=timeout)
    try:
        head = f"CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        if (auth := proxy.authorization()) is not None:
            head += f"Proxy-Authorization: {auth}\r\n"
        sock.sendall((head + "\r\n").encode())
        data = b""
        while b"\r\n\r\n" not in data and len(data) < MAX_HEAD:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
        line, _, rest = data.partition(b"\r\n")
        fields = line.decode("latin-1").split(" ", 2)
        if len(fields) < 2 or not fields[1].isdigit():
            raise ConnectRefused(0, "no HTTP answer", data[:200].decode("latin-1"))
        status = int(fields[1])
        if status != 200:
            body = rest.partition(b"\r\n\r\n")[2]
            raise ConnectRefused(status, fields[2] if len(fields) > 2 else "",
                                 body[:300].decode("utf-8", "replace").strip())
        return sock
    except BaseException:
        sock.close()
        raise


@dataclass
class Handshake:
    leaf: x509.Certificate
    chain: list[x509.Certificate]  # as presented, leaf first


def handshake(proxy: ProxyUrl, host: str, timeout: float,
              context: ssl.SSLContext | None = None) -> Handshake:
    """A TLS handshake with `host` through the bridge: verified with `context`, or unverified
    (to see what the bridge presents) when None."""
    if context is None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["http/1.1"])
    sock = open_tunnel(proxy, host, timeout)
    with context.wrap_socket(sock, server_hostname=host) as tls:
        der = tls.getpeercert(binary_form=True)
        presented = tls.get_unverified_chain() or []
    if der is None:
        raise ssl.SSLError(f"{host} presented no certificate")
    chain = [x509.load_der_x509_certificate(c) for c in presented] or \
        [x509.load_der_x509_certificate(der)]
    return Handshake(chain[0], chain)


def fetch_health(proxy: ProxyUrl, timeout: float) -> dict[str, Any]:
    """The bridge's status document, asked through the proxy with the caller's credentials
    (the bridge shows the details only to an actor)."""
    conn = http.client.HTTPConnection(proxy.host, proxy.port, timeout=timeout)
    headers = {"Host": "aibridge.health", "Connection": "close"}
    if (auth := proxy.authorization()) is not None:
        headers["Proxy-Authorization"] = auth
    try:
        conn.request("GET", HEALTH_URL, headers=headers)
        response = conn.getresponse()
        body = response.read(1024 * 1024)
    finally:
        conn.close()
    if response.status not in (200, 503):
        raise ValueError(f"HTTP {response.status} from {HEALTH_URL}")
    return json.loads(body)


# -- certificates ---------------------------------------------------------------------------------


def read_certs(path: Path) -> list[x509.Certificate]:
    data = path.read_bytes()
    with warnings.catch_warnings():
        # System bundles hold a few old roots that cryptography warns about (negative serials).
        warnings.simplefilter("ignore", CryptographyDeprecationWarning)
        return x509.load_pem_x509_certificates(data)


def issued_by(leaf: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        leaf.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):  # name, key type or signature mismatch
        return False
    return True


def issuer_in(leaf: x509.Certificate, candidates: list[x509.Certificate]
              ) -> x509.Certificate | None:
    return next((c for c in candidates if issued_by(leaf, c)), None)


def key_id(cert: x509.Certificate) -> str | None:
    """The leaf's authority key id: names the issuing CA's key when its certificate is unknown."""
    try:
        aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    except x509.ExtensionNotFound:
        return None
    return aki.key_identifier.hex(":").upper() if aki.key_identifier else None


# -- the checks -----------------------------------------------------------------------------------


@dataclass
class Doctor:
    proxy_text: str | None
    hosts: list[str]  # from --host / --config; empty: ask the bridge, else built-in
    timeout: float
    env: dict[str, str]
    out: TextIO = sys.stdout
    proxy: ProxyUrl | None = None
    status: dict[str, Any] | None = None
    bridge_ca: x509.Certificate | None = None
    # The first leaf's issuer name and key id: identify the bridge CA when its certificate is
    # unknown (no details from the bridge, not presented, not in any of the client's files).
    issuer_key: tuple[x509.Name, str | None] | None = None
    seen_issuer: str = ""  # the bridge CA as printed
    symbols: tuple[str, str, str] = ("✓", "✗", "-")

    def __post_init__(self) -> None:
        encoding = getattr(self.out, "encoding", None) or "ascii"
        try:
            "✓✗".encode(encoding)
        except (UnicodeEncodeError, LookupError):
            self.symbols = ("[ok]", "[FAIL]", "[--]")

    @property
    def bridge(self) -> ProxyUrl:
        assert self.proxy is not None  # check_proxy_url runs first and stops when it fails
        return self.proxy

    # output

    def ok(self, name: str, text: str) -> None:
        print(f"{self.symbols[0]} {name}: {text}", file=self.out, flush=True)

    def note(self, name: str, text: str) -> None:
        print(f"{self.symbols[2]} {name}: {text}", file=self.out, flush=True)

    def fail(self, name: str, text: str, fix: str) -> Failed:
        print(f"{self.symbols[1]} {name}: {text}", file=self.out, flush=True)
        print(f"    fix: {fix}", file=self.out, flush=True)
        return Failed(name)

    # steps

    def run(self) -> int:
        try:
            self.check_proxy_url()
            self.check_reachable()
            self.check_token()
            self.ask_bridge()
            self.check_no_proxy()
            self.check_trust()
            self.check_decrypted()
            self.check_keys()
            self.check_ready()
        except Failed:
            return 1
        return 0

    def check_proxy_url(self) -> None:
        name = "proxy URL"
        text, source = self.proxy_text, "--proxy"
        if text is None:
            source = next((v for v in PROXY_VARIABLES if self.env.get(v)), "")
            text = self.env.get(source) if source else None
        if not text:
            raise self.fail(name, "no --proxy given and HTTPS_PROXY is not set",
                            "export HTTPS_PROXY=http://<you>:<token>@<bridge host>:<port> "
                            "(your token as the password), or pass --proxy with that URL")
        try:
            self.proxy = parse_proxy(text, source)
        except ValueError as e:
            raise self.fail(name, f"{source} is not a usable proxy URL: {e}",
                            f"set {source} to http://<you>:<token>@<bridge host>:<port>") \
                from None
        creds = "with credentials" if self.proxy.token else "without credentials"
        self.ok(name, f"{self.proxy.shown()} from {source} ({creds})")

    def check_reachable(self) -> None:
        proxy = self.bridge
        name, where = "proxy reachable", f"{proxy.host}:{proxy.port}"
        started = time.monotonic()
        try:
            socket.create_connection((proxy.host, proxy.port),
                                     timeout=self.timeout).close()
        except socket.gaierror as e:
            raise self.fail(name, f"cannot resolve {proxy.host}: {e.strerror}",
                            f"check the host name in {proxy.source}") from None
        except TimeoutError:
            raise self.fail(name, f"no answer from {where} within {self.timeout:g}s",
                            "check the host and port, and that no firewall drops the "
                            "connection") from None
        except OSError as e:
            why = "nothing listens there" if e.errno == errno.ECONNREFUSED else \
                (e.strerror or str(e))
            raise self.fail(name, f"cannot connect to {where}: {why}",
                            "start the bridge, or fix the host and port in "
                            f"{proxy.source} (the bridge listens on the port given with "
                            "--listen-port or --mode regular@host:port; 8080 by default)") \
                from None
        self.ok(name, f"TCP connect to {where} in {(time.monotonic() - started) * 1000:.0f} ms")

    def check_token(self) -> None:
        proxy = self.bridge
        name, host = "token accepted", self.provider_hosts()[0]
        try:
            open_tunnel(proxy, host, self.timeout).close()
        except ConnectRefused as e:
            if e.status == 407:
                if proxy.token is None:
                    raise self.fail(name, "the bridge wants proxy credentials (407) and "
                                    f"{proxy.source} has none",
                                    f"put your token in the URL: {proxy.source}="
                                    f"http://<you>:<token>@{proxy.host}:{proxy.port}"
                                    ) from None
                raise self.fail(name, f"the bridge refused the token "
                                f"{mask_secret(proxy.token)} (407 Proxy Authentication "
                                "Required)",
                                "use the token your bridge operator gave you, as the password "
                                f"in {proxy.source}; after many failures the bridge "
                                "refuses for a minute even the right one") from None
            raise self.fail(name, f"CONNECT {host}:443 was answered {e}"
                            + (f": {e.body}" if e.body else ""),
                            "is this address the bridge, and not another proxy?") from None
        except OSError as e:
            raise self.fail(name, f"CONNECT {host}:443 failed: {e}",
                            "check that this address is the bridge") from None
        what = "token accepted" if proxy.token else "no credentials needed"
        self.ok(name, f"CONNECT {host}:443 -> 200 ({what})")

    def ask_bridge(self) -> None:
        proxy = self.bridge
        try:
            self.status = fetch_health(proxy, self.timeout)
        except (OSError, ValueError, http.client.HTTPException) as e:
            self.note("bridge status", f"not available ({e}); checking the built-in hosts")
            return
        ca = self.status.get("ca") if isinstance(self.status.get("ca"), dict) else None
        if ca and ca.get("pem"):
            try:
                self.bridge_ca = x509.load_pem_x509_certificate(ca["pem"].encode())
            except ValueError:
                self.bridge_ca = None
        providers = self.status.get("providers")
        details = isinstance(providers, list)
        shown = "details shown to your actor" if details else \
            "public summary (details are for actors' credentials)"
        self.ok("bridge status", f"{HEALTH_URL} answered: {shown}")
        if self.hosts:
            return
        if details:
            self.hosts = [h for p in providers for h in p.get("hosts", [])]
        elif isinstance(providers, dict):
            # The summary names providers only: built-in ones have known hosts.
            builtin = builtin_hosts()
            self.hosts = [h for name in providers for h in builtin.get(name, [])]
            if unknown := [name for name in providers if name not in builtin]:
                self.note("provider hosts", f"not known for {', '.join(unknown)}: pass them "
                                            "with --host, or --config with the bridge's file")

    def check_no_proxy(self) -> None:
        bypassed = [h for h in self.provider_hosts() if _bypasses(h, self.env)]
        if bypassed:
            var = next((v for v in ("NO_PROXY", "no_proxy") if self.env.get(v)), "NO_PROXY")
            raise self.fail("NO_PROXY", f"{var}={self.env.get(var, '')} makes clients bypass "
                            f"the bridge for {', '.join(bypassed)}",
                            f"remove those hosts (or a pattern matching them) from {var}")

    def check_trust(self) -> None:
        host = self.provider_hosts()[0]
        presented = self._presented(host)
        if not any(self.env.get(v) for v in CA_VARIABLES):
            self._check_system_store(host)
            return
        for var in CA_VARIABLES:
            if self.env.get(var):
                self._check_variable(var, Path(self.env[var]).expanduser(), host, presented)
            else:
                self.note(var, "not set")

    def check_decrypted(self) -> None:
        for host in self.provider_hosts():
            name = f"decrypted {host}"
            try:
                shake = handshake(self.bridge, host, self.timeout)
            except ConnectRefused as e:
                raise self.fail(name, f"CONNECT {host}:443 was answered {e}",
                                "ask the bridge operator: the bridge refused the tunnel") \
                    from None
            except (OSError, ssl.SSLError) as e:
                raise self.fail(name, f"no TLS from the bridge for {host} ({e}): it tunnelled "
                                "the connection to the real host instead of answering itself",
                                f"the bridge decrypts only its providers' hosts: add {host} to "
                                "a provider's hosts in aibridge.toml, or drop --host") from None
            if not self._minted(shake):
                raise self.fail(name, f"{host} presented {ca_names.subject(shake.leaf)} issued "
                                f"by {shake.leaf.issuer.rfc4514_string()}, not by the bridge CA"
                                f" ({self.seen_issuer}): the bridge tunnels this host",
                                f"add {host} to a provider's hosts in the bridge's aibridge.toml"
                                ", or check that HTTPS_PROXY names the bridge")
            self.ok(name, f"certificate minted by the bridge CA ({self.seen_issuer})")

    def check_keys(self) -> None:
        name = "central keys"
        if self.status is None:
            self.note(name, "unknown (the bridge's status was not available)")
            return
        providers = self.status.get("providers")
        counts: dict[str, tuple[int, int]] = {}
        if isinstance(providers, dict):  # the public summary
            counts = {n: (int(c.get("central_keys", 0)), int(c.get("usable_keys", 0)))
                      for n, c in providers.items()}
        elif isinstance(providers, list):  # the details
            for p in providers:
                keys = p.get("keys") or []
                counts[p["name"]] = (len(keys),
                                     sum(1 for k in keys if k.get("state") == "valid"))
        with_keys = {n: c for n, c in counts.items() if c[0]}
        if not with_keys:
            self.ok(name, "the bridge has no central keys: every caller sends its own API key")
            return
        empty = [n for n, (total, usable) in with_keys.items() if usable == 0]
        summary = ", ".join(f"{n} {u} of {t} usable" for n, (t, u) in with_keys.items())
        if empty:
            raise self.fail(name, f"no usable central key for {', '.join(empty)} ({summary})",
                            "ask the bridge operator: its keys are cooling down after rate "
                            "limits or were refused by the provider (the bridge's log and its "
                            "health details name them by masked hint); they come back by "
                            "themselves after the wait the provider asked for")
        self.ok(name, summary)

    def check_ready(self) -> None:
        if self.status is None:
            return
        if self.status.get("ready"):
            self.ok("bridge ready", "yes")
            return
        problems = "; ".join(str(p) for p in self.status.get("problems", [])) or "no reason"
        raise self.fail("bridge ready", f"not ready: {problems}",
                        "ask the bridge operator (the bridge's log says more); requests may "
                        "still work meanwhile")

    # helpers

    def provider_hosts(self) -> list[str]:
        # A wildcard (`*.openai.azure.com`) names no host to connect to; pass one with --host.
        hosts = self.hosts or default_hosts()
        return [h for h in hosts if "*" not in h] or hosts

    def _presented(self, host: str) -> Handshake:
        name = "bridge CA"
        try:
            shake = handshake(self.bridge, host, self.timeout)
        except (ConnectRefused, OSError, ssl.SSLError) as e:
            raise self.fail(name, f"no TLS from the bridge for {host} ({e})",
                            f"the bridge should decrypt {host}: check its providers' hosts, or "
                            "pass the provider hosts it decrypts with --host") from None
        # Who signed it: the presented chain, the CA the bridge names, or one the client has.
        if self.bridge_ca is None or not issued_by(shake.leaf, self.bridge_ca):
            self.bridge_ca = issuer_in(shake.leaf, shake.chain[1:]) or issuer_in(
                shake.leaf, self._client_certs())
        self.issuer_key = (shake.leaf.issuer, key_id(shake.leaf))
        if self.bridge_ca is not None:
            self.seen_issuer = (f"{ca_names.subject(self.bridge_ca)}, SHA-256 "
                                f"{ca_names.fingerprint(self.bridge_ca)}")
        else:
            kid = self.issuer_key[1]
            self.seen_issuer = shake.leaf.issuer.rfc4514_string() + (
                f", key id {kid}" if kid else "")
        self.ok(name, f"{host} is served a certificate issued by {self.seen_issuer}")
        return shake

    def _minted(self, shake: Handshake) -> bool:
        if self.bridge_ca is not None:
            return issued_by(shake.leaf, self.bridge_ca)
        return self.issuer_key == (shake.leaf.issuer, key_id(shake.leaf))

    def _client_certs(self) -> list[x509.Certificate]:
        found: list[x509.Certificate] = []
        for var in CA_VARIABLES:
            path = self.env.get(var)
            if path:
                with suppress(OSError, ValueError):  # reported by the variable's own check
                    found += read_certs(Path(path).expanduser())
        return found

    def _check_variable(self, var: str, path: Path, host: str, presented: Handshake) -> None:
        name = f"{var}={path}"
        bundle_fix = ("on the bridge host run `aibridge ca-bundle --confdir <the bridge's "
                      "confdir>` and use the file it writes: "
                      + ("<confdir>/aibridge-ca.pem (the bridge CA; Node adds it to its roots)"
                         if var not in REPLACING else
                         "<confdir>/aibridge-bundle.pem (system CAs + the bridge CA)")
                      + "; the fingerprint it prints must match the one above")
        try:
            certs = read_certs(path)
        except FileNotFoundError:
            raise self.fail(name, "no such file", bundle_fix) from None
        except OSError as e:
            raise self.fail(name, f"cannot read it: {e.strerror}", bundle_fix) from None
        except ValueError:
            raise self.fail(name, "holds no PEM certificate", bundle_fix) from None
        try:
            handshake(self.bridge, host, self.timeout,
                      ssl.create_default_context(cafile=str(path)))
        except ssl.SSLCertVerificationError as e:
            raise self.fail(name, self._distrust(path, certs, host, presented, e),
                            bundle_fix) from None
        except (ConnectRefused, OSError, ssl.SSLError) as e:
            raise self.fail(name, f"TLS handshake with {host} through the bridge failed: {e}",
                            bundle_fix) from None
        extra = ""
        if var in REPLACING and len(certs) <= FEW_CERTS:
            extra = (f"; note: it holds only {len(certs)} certificate(s), so tunnelled hosts "
                     "(everything but the providers) will fail to verify: use the bundle "
                     "`aibridge ca-bundle` writes (system CAs + the bridge CA)")
        self.ok(name, f"trusts the bridge CA: TLS handshake with {host} verified "
                      f"({len(certs)} certificate(s) in the file){extra}")

    def _distrust(self, path: Path, certs: list[x509.Certificate], host: str,
                  presented: Handshake, error: ssl.SSLCertVerificationError) -> str:
        issuer = presented.leaf.issuer
        if issuer_in(presented.leaf, certs) is None:
            same_name = [c for c in certs if c.subject == issuer]
            listed = same_name if same_name else certs if len(certs) <= FEW_CERTS else []
            holds = "; ".join(f"{ca_names.subject(c)}, SHA-256 {ca_names.fingerprint(c)}"
                              for c in listed)
            what = (f"the file holds {holds}" if holds else
                    f"none of its {len(certs)} certificates is named {issuer.rfc4514_string()}")
            return (f"does not trust the bridge CA: the bridge's certificate for {host} is "
                    f"issued by {self.seen_issuer}, which is not in the file; {what}")
        return f"the bridge CA is in it, but verification failed: {error.verify_message}"

    def _check_system_store(self, host: str) -> None:
        name = "system trust store"
        try:
            handshake(self.bridge, host, self.timeout,
                      ssl.create_default_context())
        except (ConnectRefused, OSError, ssl.SSLError):
            raise self.fail(name, f"none of {', '.join(CA_VARIABLES)} is set and the system "
                            f"store does not trust the bridge CA ({self.seen_issuer})",
                            "on the bridge host run `aibridge ca-bundle --confdir <the "
                            "bridge's confdir>` and export the variables it prints") from None
        self.ok(name, f"none of the CA variables is set; the system store trusts the bridge CA "
                      f"(TLS handshake with {host} verified)")


def _bypasses(host: str, env: dict[str, str]) -> bool:
    no_proxy = env.get("no_proxy") or env.get("NO_PROXY")
    if not no_proxy:
        return False
    with _environ({"no_proxy": no_proxy}):
        return bool(urllib.request.proxy_bypass_environment(host))


@contextmanager
def _environ(values: dict[str, str]) -> Iterator[None]:
    """urllib reads NO_PROXY from os.environ; the checks run on a given environment."""
    saved = {k: os.environ.get(k) for k in (*values, "NO_PROXY")}
    os.environ.pop("NO_PROXY", None)
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def default_hosts() -> list[str]:
    return [h for hosts in builtin_hosts().values() for h in hosts]


def builtin_hosts() -> dict[str, list[str]]:
    from aibridge.config import BUILTIN_PROVIDERS
    return {name: list(pc.hosts or ()) for name, pc in BUILTIN_PROVIDERS.items() if pc.enabled}


# -- the command ----------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--proxy", default=None, metavar="URL",
                        help="the bridge as clients use it, http://<you>:<token>@host:port "
                             "(default: $HTTPS_PROXY)")
    parser.add_argument("--host", action="append", default=[], dest="hosts", metavar="HOST",
                        help="a provider host to check (repeatable; default: the hosts the "
                             "bridge reports, else those of --config, else the built-in ones)")
    parser.add_argument("--config", type=Path, default=None,
                        help="the bridge's TOML config, for its provider hosts")
    parser.add_argument("--timeout", type=float, default=5.0, metavar="SECONDS",
                        help="per network step (default: 5)")


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    hosts = list(args.hosts)
    if not hosts and args.config is not None:
        from aibridge.config import ConfigError, load_config
        from aibridge.providers.registry import decrypted_hosts
        try:
            hosts = decrypted_hosts(load_config(args.config)[0])
        except ConfigError as e:
            print(f"aibridge doctor: {e}", file=sys.stderr)
            return 2
    doctor = Doctor(args.proxy, hosts, args.timeout, dict(os.environ), out or sys.stdout)
    return doctor.run()
