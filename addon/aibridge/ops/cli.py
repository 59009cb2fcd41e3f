"""The `aibridge` command: helpers around the proxy (the proxy itself runs in mitmdump)."""

from __future__ import annotations

import argparse
import os
import sys
from datetime import datetime
from pathlib import Path

from aibridge.ops import cabundle, doctor, serve


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="aibridge", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    ca = sub.add_parser(
        "ca-bundle", help="write system CAs + the bridge CA into one PEM file",
        description="Write the trust files clients need from the CA in the bridge's confdir and "
                    "print its fingerprint and the variables to set. It never creates a CA: "
                    "start the bridge once with that confdir first.")
    ca.add_argument("--confdir", type=Path, default=Path("certs"),
                    help="the bridge's mitmproxy confdir, as given to it with --set confdir= "
                         "(default: certs)")
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
        "usage", help="requests, tokens and cost per day, actor, team, model or provider",
        description="Requests, tokens and cost (USD) per UTC day, actor and model (or what "
                    "--by names), read from the database that [recording] url names (default: "
                    "the local SQLite file). Requests whose model has no price are counted "
                    "apart (unpriced, unpriced_tokens), never as $0.")
    usage.add_argument("--config", type=Path, default=None,
                       help="the bridge's TOML config (default: built-in defaults)")
    usage.add_argument("--since", type=_since, default=None, metavar="WHEN",
                       help="only requests started since WHEN: YYYY-MM-DD (UTC) or a duration "
                            "such as 7d, 24h, 30m (default: everything)")
    usage.add_argument("--actor", default=None, help="only this actor id")
    usage.add_argument("--by", type=_by, default=None, metavar="DIMS",
                       help="group by any of day, actor, team, model, provider, "
                            "comma-separated (default: day,actor,model); team is the actors' "
                            "metadata key [budgets_settings] team_key (default Team)")
    usage.add_argument("--format", choices=("table", "json", "csv", "html"), default="table",
                       help="output format (default: table); html is one self-contained page "
                            "with charts (spend per day by team, top actors, models, cache)")
    usage.add_argument("--output", "-o", type=Path, default=None, metavar="FILE",
                       help="write to FILE instead of stdout")
    usage.add_argument("--passthrough", action="store_true",
                       help="report passthrough requests (files, models, batches, ...) per "
                            "day, actor and provider instead of model requests")
    usage.add_argument("--findings", action="store_true",
                       help="report the secrets scanning found, per actor and rule (counts "
                            "by action, distinct secrets, requests; never a secret)")

    budgets = sub.add_parser(
        "budgets", help="each budget and rate limit with what was used of it, from the records",
        description="Each [[budgets]] and [[limits]] entry of the config with its spend (or use) "
                    "according to the recording database, its share and when it resets.")
    budgets.add_argument("--config", type=Path, required=True,
                         help="the bridge's TOML config")
    budgets.add_argument("--format", choices=("table", "json"), default="table",
                         help="output format (default: table)")

    doctor.add_arguments(sub.add_parser(
        "doctor", help="check this machine's client set-up against a running bridge",
        description=doctor.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter))

    serve.add_arguments(sub.add_parser(
        "serve", help="N bridge workers behind HAProxy as one gateway",
        description=serve.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter))

    args = parser.parse_args(argv)
    if args.command == "serve":
        return serve.run(args)
    if args.command == "ca-bundle":
        return _ca_bundle(args)
    elif args.command == "doctor":
        return doctor.run(args)
    elif args.command == "ca-import":
        return _ca_import(args)
    elif args.command == "pac":
        return _pac(args)
    elif args.command == "usage":
        return _usage(args)
    elif args.command == "budgets":
        return _budgets(args)
    return 0


def _since(text: str) -> datetime:
    from aibridge.recording.report import parse_since
    try:
        return parse_since(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _by(text: str) -> tuple[str, ...]:
    from aibridge.recording.report import parse_by
    try:
        return parse_by(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _ca_bundle(args: argparse.Namespace) -> int:
    try:
        files = cabundle.write_trust_files(args.confdir, args.out)
    except cabundle.CAError as e:
        print(f"aibridge ca-bundle: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"aibridge ca-bundle: {e.filename}: {e.strerror}", file=sys.stderr)
        return 1
    for note in files.notes:
        print(f"aibridge ca-bundle: {note}", file=sys.stderr)
    print("\n".join(cabundle.export_lines(files)))
    return 0


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
        hosts = decrypted_hosts(config)  # (a provider type the catalog lacks is refused here)
    except (ValueError, ConfigError) as e:
        print(f"aibridge pac: {e}", file=sys.stderr)
        return 1
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
    from aibridge.recording import findings_report, passthrough_report
    from aibridge.recording.db_errors import RecordingError
    from aibridge.recording.report import DEFAULT_BY, DIMENSIONS, read_usage, render
    from aibridge.recording.report_html import render_html
    # --passthrough and --findings are other reports of the same records, in their own rows.
    other = None
    if args.passthrough:
        flag, per = "--passthrough", "day, actor and provider"
        other = (passthrough_report.read_passthroughs, passthrough_report.render)
    elif args.findings:
        flag, per = "--findings", "actor and rule"
        other = (findings_report.read_findings, findings_report.render)
    if other is not None and (args.format == "html" or args.by):
        print(f"aibridge usage: {flag} reports per {per}, as a table, json or csv",
              file=sys.stderr)
        return 2
    html = args.format == "html"
    by = DIMENSIONS if html else args.by or DEFAULT_BY  # the page groups as each chart needs
    try:
        config, base_dir = load_config(args.config)
        team_key = config.budgets_settings.team_key
        if other is not None:
            read, render_rows = other
            text = render_rows(read(config.recording.url, base_dir, since=args.since,
                                    actor=args.actor), args.format)
        else:
            rows = read_usage(config.recording.url, base_dir, since=args.since,
                              actor=args.actor, by=by, team_key=team_key)
            text = (render_html(rows, since=args.since, actor=args.actor, team_key=team_key)
                    if html else render(rows, args.format, by))
    except (ConfigError, RecordingError) as e:
        print(f"aibridge usage: {e}", file=sys.stderr)
        return 1
    if args.output is None:
        sys.stdout.write(text)
        return 0
    try:
        args.output.write_text(text, encoding="utf-8")
    except OSError as e:
        print(f"aibridge usage: {args.output}: {e.strerror}", file=sys.stderr)
        return 1
    print(f"wrote {args.output.resolve()}", file=sys.stderr)
    return 0


def _budgets(args: argparse.Namespace) -> int:
    # Imported here: the database stack is only needed by this command.
    from aibridge.config import ConfigError, load_config
    from aibridge.ops.budgets import render, report
    from aibridge.recording.connection import recording_connection
    from aibridge.recording.db_errors import RecordingError
    try:
        config, base_dir = load_config(args.config)
        with recording_connection(config.recording.url, base_dir,
                                  must_exist=False) as connection:
            rows = report(config, connection)
    except (ConfigError, RecordingError) as e:
        print(f"aibridge budgets: {e}", file=sys.stderr)
        return 1
    sys.stdout.write(render(rows, args.format))
    return 0


if __name__ == "__main__":
    sys.exit(main())
