"""The `aibridge` command: helpers around the proxy (the proxy itself runs in mitmdump)."""

from __future__ import annotations

import argparse
import sys
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

    args = parser.parse_args(argv)
    if args.command == "ca-bundle":
        out = cabundle.write_bundle(args.confdir, args.out or args.confdir / "aibridge-bundle.pem")
        ca_cert = args.confdir / cabundle.CA_CERT
        print(f"export SSL_CERT_FILE={out.resolve()}        # Python SDKs (httpx2)")
        print(f"export REQUESTS_CA_BUNDLE={out.resolve()}   # requests")
        print(f"export CODEX_CA_CERTIFICATE={out.resolve()} # Codex")
        print(f"export NODE_EXTRA_CA_CERTS={ca_cert.resolve()} # Node, Claude Code (adds a CA)")
        print(f"curl --cacert {out.resolve()} ...")
    return 0


if __name__ == "__main__":
    sys.exit(main())
