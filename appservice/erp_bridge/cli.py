"""The `erp-bridge` command: run, generate-config, generate-registration,
element-login-page."""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from appservice.erp_bridge.config import (
    BridgeConfig, ConfigError, fill_missing_secrets, generate_config_text, load_config)

logger = logging.getLogger("erp_bridge")


def _fail(message: str, code: int = 2) -> int:
    print(f"erp-bridge: {message}", file=sys.stderr)
    return code


def _load(path: str) -> BridgeConfig:
    try:
        return load_config(Path(path))
    except ConfigError as e:
        raise SystemExit(_fail(str(e))) from None


def cmd_run(args: argparse.Namespace) -> int:
    config = _load(args.config)
    try:
        config.require_secrets()
    except ConfigError as e:
        return _fail(f"{args.config}: {e}")
    logging.basicConfig(level=getattr(logging, config.log_level), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from twisted.internet import defer, reactor

    from appservice.erp_bridge.app import Bridge

    bridge = Bridge(config)
    exit_code = [0]

    def failed(f):
        logger.error("start-up failed: %s", f.getErrorMessage())
        logger.debug("%s", f.getTraceback())
        exit_code[0] = 1
        if reactor.running:
            reactor.stop()

    reactor.callWhenRunning(lambda: defer.ensureDeferred(bridge.start()).addErrback(failed))
    reactor.addSystemEventTrigger("before", "shutdown", lambda: defer.ensureDeferred(bridge.stop()))
    reactor.run()
    return exit_code[0]


def cmd_generate_config(args: argparse.Namespace) -> int:
    out = Path(args.output or args.config or "erp-bridge.yaml")
    if out.exists() and not args.force:
        return _fail(f"{out} exists; use --force to overwrite")
    try:
        text = generate_config_text(
            server_name=args.server_name, hs_url=args.homeserver_url, port=args.port,
            webhook_url=args.webhook_url, dsn=args.database_dsn, pgdata=args.embedded_pgdata,
            element_url=args.element_url)
    except ConfigError as e:
        return _fail(str(e))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    out.chmod(0o600)  # it holds secrets
    print(f"wrote {out}")
    return 0


def cmd_generate_registration(args: argparse.Namespace) -> int:
    from appservice.erp_bridge.registration import registration_yaml

    path = Path(args.config)
    if not path.exists():
        return _fail(f"{path} does not exist (create it with `erp-bridge generate-config`)")
    try:
        filled = fill_missing_secrets(path)
    except ConfigError as e:
        return _fail(str(e))
    if filled:
        print(f"filled in new secrets in {path}: {', '.join(filled)}")
    config = _load(args.config)
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(registration_yaml(config))
    out.chmod(0o600)
    print(f"wrote {out}")
    return 0


def cmd_element_login_page(args: argparse.Namespace) -> int:
    from appservice.erp_bridge.element_login import PAGE

    out = Path(args.output)
    out.write_text(PAGE)
    print(f"wrote {out}; serve it next to Element's index.html")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="erp-bridge", description="ERP <-> Matrix bridge (application service)")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the bridge")
    run.add_argument("--config", required=True)
    run.set_defaults(fn=cmd_run)

    gen = sub.add_parser("generate-config", help="write a fresh config with new secrets")
    gen.add_argument("--output", "-o", help="file to write (default erp-bridge.yaml)")
    gen.add_argument("--config", help="same as --output")
    gen.add_argument("--server-name", default="localhost")
    gen.add_argument("--homeserver-url", default="http://127.0.0.1:8008")
    gen.add_argument("--port", type=int, default=9010, help="where the bridge listens")
    gen.add_argument("--webhook-url", default=None)
    gen.add_argument("--database-dsn", default=None,
                     help="default: the homeserver's embedded PostgreSQL (see --embedded-pgdata)")
    gen.add_argument("--embedded-pgdata", default="data/postgres",
                     help="the homeserver's <data_dir>/postgres, relative to the config file")
    gen.add_argument("--element-url", default="https://app.element.io")
    gen.add_argument("--force", action="store_true")
    gen.set_defaults(fn=cmd_generate_config)

    reg = sub.add_parser("generate-registration",
                         help="write the homeserver's registration file from the config "
                              "(filling missing secrets into the config first)")
    reg.add_argument("--config", required=True)
    reg.add_argument("--output", "-o", required=True)
    reg.set_defaults(fn=cmd_generate_registration)

    page = sub.add_parser("element-login-page",
                          help="write the sign-in helper page to serve next to Element Web")
    page.add_argument("--output", "-o", default="erp-login.html")
    page.set_defaults(fn=cmd_element_login_page)

    args = parser.parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    raise SystemExit(main())
