"""The `aibridge` command: helpers around the proxy (the proxy itself runs in mitmdump)."""

from __future__ import annotations

import argparse
import os
import sys
from datetime import datetime
from pathlib import Path

from aibridge.ops import cabundle


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="aibridge", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    ca = sub.add_parser("ca-bundle", help="write system CAs + the bridge CA into one PEM file")
    ca.add_argument("--confdir", type=Path, default=Path("certs"),
                    help="mitmproxy confdir holding the CA (default: certs)")
    ca.add_argument("--out", type=Path, default=None,
                    help="bundle path (default: <confdir>/aibridge-bundle.pem)")

    imp = sub.add_parser(
        "ca-import", help="install an existing CA (certificate + key) as the bridge CA",
        description="Check a CA certificate and its private key, install them in mitmproxy's "
                    "form in the confdir and write the client trust files. Restart the bridge "
                    "afterwards: mitmproxy reads the CA at start-up.")
    imp.add_argument("--cert", type=Path, required=True,
                     help="PEM file: the CA certificate first, then any issuers up to the root")
    imp.add_argument("--key", type=Path, required=True, help="PEM file: the CA's private key "
                     "(RSA or EC; PKCS#8 or traditional)")
    # A password on the command line would end up in shell history and `ps`; only its name does.
    imp.add_argument("--key-password-env", metavar="NAME", default=None,
                     help="environment variable holding the key's password, if encrypted")
    imp.add_argument("--confdir", type=Path, default=Path("certs"),
                     help="mitmproxy confdir (default: certs)")
    imp.add_argument("--force", action="store_true",
                     help="replace a different CA already in the confdir")

    pac = sub.add_parser(
        "pac", help="write a PAC file: provider hosts via the bridge, the rest DIRECT",
        description="Write a proxy auto-config file that sends the configured provider hosts "
                    "to the bridge and every other host DIRECT.")
    pac.add_argument("--config", type=Path, default=None,
                     help="the bridge's TOML config (default: built-in providers)")
    pac.add_argument("--proxy", required=True, metavar="HOST:PORT",
                     help="the bridge as clients reach it, e.g. bridge.example.com:8080")
    pac.add_argument("--out", default="aibridge.pac",
                     help="output file, - for stdout (default: aibridge.pac)")

    usage = sub.add_parser(
        "usage", help="requests and tokens per day, actor and model, from the recordings",
        description="Requests and tokens per UTC day, actor and model, read from the database "
                    "that [recording] url names (default: the local SQLite file).")
    usage.add_argument("--config", type=Path, default=None,
                       help="the bridge's TOML config (default: built-in defaults)")
    usage.add_argument("--since", type=_since, default=None, metavar="WHEN",
                       help="only requests started since WHEN: YYYY-MM-DD (UTC) or a duration "
                            "such as 7d, 24h, 30m (default: everything)")
    usage.add_argument("--actor", default=None, help="only this actor id")
    usage.add_argument("--format", choices=("table", "json", "csv"), default="table",
                       help="output format (default: table)")

    args = parser.parse_args(argv)
    if args.command == "ca-bundle":
        files = cabundle.write_trust_files(args.confdir, args.out)
        print("\n".join(cabundle.export_lines(files)))
    elif args.command == "ca-import":
        return _ca_import(args)
    elif args.command == "pac":
        return _pac(args)
    elif args.command == "usage":
        return _usage(args)
    return 0


def _since(text: str) -> datetime:
    from aibridge.recording.report import parse_since
    try:
        return parse_since(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _ca_import(args: argparse.Namespace) -> int:
    password: bytes | None = None
    if args.key_password_env:
        if args.key_password_env not in os.environ:
            print(f"aibridge ca-import: ${args.key_password_env} is not set", file=sys.stderr)
            return 1
        password = os.environ[args.key_password_env].encode()
    try:
        cert_pem, key_pem = args.cert.read_bytes(), args.key.read_bytes()
        ca = cabundle.import_ca(args.confdir, cert_pem, key_pem, password, force=args.force)
        files = cabundle.write_trust_files(args.confdir)
    except cabundle.CAError as e:
        print(f"aibridge ca-import: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"aibridge ca-import: {e.filename}: {e.strerror}", file=sys.stderr)
        return 1
    if problems := cabundle.strict_client_problems(ca):
        print(f"aibridge ca-import: warning: the CA has {'; '.join(problems)}: Python >= 3.13 "
              "clients (VERIFY_X509_STRICT) will reject the certificates it issues",
              file=sys.stderr)
    confdir = args.confdir.resolve()
    print(f"imported {ca.subject.rfc4514_string()} (valid until "
          f"{ca.not_valid_after_utc:%Y-%m-%d}) into {confdir / cabundle.CA_KEY_AND_CERT}")
    print(f"start (or restart) the bridge with --set confdir={confdir}")
    print("\n".join(cabundle.export_lines(files)))
    return 0


def _pac(args: argparse.Namespace) -> int:
    from aibridge.config import ConfigError, load_config
    from aibridge.ops import pac
    from aibridge.providers.registry import decrypted_hosts
    try:
        pac.validate_proxy(args.proxy)
        # The bridge's own provider merge, without keys: any machine with the config can run it.
        config, _ = load_config(args.config)
    except (ValueError, ConfigError) as e:
        print(f"aibridge pac: {e}", file=sys.stderr)
        return 1
    hosts = decrypted_hosts(config)
    text = pac.render(hosts, args.proxy, source=str(args.config) if args.config else None)
    if args.out == "-":
        sys.stdout.write(text)
        return 0
    out = Path(args.out)
    out.write_text(text)
    print(f"wrote {out.resolve()}: {', '.join(pac.normalize_hosts(hosts))} -> PROXY {args.proxy}")
    return 0


def _usage(args: argparse.Namespace) -> int:
    # Imported here: the database stack is only needed by this command.
    from aibridge.config import ConfigError, load_config
    from aibridge.recording.db_errors import RecordingError
    from aibridge.recording.report import read_usage, render
    try:
        config, base_dir = load_config(args.config)
        rows = read_usage(config.recording.url, base_dir, since=args.since, actor=args.actor)
    except (ConfigError, RecordingError) as e:
        print(f"aibridge usage: {e}", file=sys.stderr)
        return 1
    sys.stdout.write(render(rows, args.format))
    return 0


if __name__ == "__main__":
    sys.exit(main())
