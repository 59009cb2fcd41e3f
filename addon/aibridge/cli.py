"""The `aibridge` command: helpers around the proxy (the proxy itself runs in mitmdump)."""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from pathlib import Path

from aibridge import cabundle


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="aibridge", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    ca = sub.add_parser("ca-bundle", help="write system CAs + the bridge CA into one PEM file")
    ca.add_argument("--confdir", type=Path, default=Path("certs"),
                    help="mitmproxy confdir holding the CA (default: certs)")
    ca.add_argument("--out", type=Path, default=None,
                    help="bundle path (default: <confdir>/aibridge-bundle.pem)")

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
        out = cabundle.write_bundle(args.confdir, args.out or args.confdir / "aibridge-bundle.pem")
        ca_cert = args.confdir / cabundle.CA_CERT
        print(f"export SSL_CERT_FILE={out.resolve()}        # Python SDKs (httpx2)")
        print(f"export REQUESTS_CA_BUNDLE={out.resolve()}   # requests")
        print(f"export CODEX_CA_CERTIFICATE={out.resolve()} # Codex")
        print(f"export NODE_EXTRA_CA_CERTS={ca_cert.resolve()} # Node, Claude Code (adds a CA)")
        print(f"curl --cacert {out.resolve()} ...")
    elif args.command == "usage":
        return _usage(args)
    return 0


def _since(text: str) -> datetime:
    from aibridge.recording.report import parse_since
    try:
        return parse_since(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _usage(args: argparse.Namespace) -> int:
    # Imported here: the database stack is only needed by this command.
    from aibridge.config import ConfigError, load_config
    from aibridge.recording.errors import RecordingError
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
