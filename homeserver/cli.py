"""The `homeserver` command: run, generate-config, register-user."""
from __future__ import annotations

import argparse
import getpass
import logging
import sys
from pathlib import Path
from typing import Any

from homeserver.config import SAMPLE_CONFIG, Config, ConfigError, generate_config_text, load_config
from homeserver.logging_setup import setup_logging

logger = logging.getLogger("homeserver")


def _load(path: str) -> Config:
    try:
        return load_config(Path(path))
    except ConfigError as e:
        print(f"homeserver: {e}", file=sys.stderr)
        raise SystemExit(2) from None


def _tune_gc() -> None:
    """Python's default collector thresholds made cyclic garbage collection a fifth of the
    server's CPU under many long-polls (each parked request lives long enough to reach the
    oldest generation, so full collections came every few seconds). Collect the young
    generation every 50,000 net allocations (objects that live a few milliseconds, such
    as a response waiting for the socket, die before being scanned), the middle one every
    5 of those (its pauses stay short), the old one rarely; what start-up built is never
    garbage."""
    import gc
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 5, 100)


def cmd_run(args: argparse.Namespace) -> int:
    config = _load(args.config)
    setup_logging(config.log_level, config.log_format)
    from twisted.internet import defer, reactor, threads

    from client_api.health import ListenerResource
    from client_api.http import LimitedChannel, LimitedRequest, build_site  # the composition root wires both
    from client_api.ratelimit import Ratelimiter
    from homeserver import ephemeral_relay, metrics, shutdown
    from sync import presence_job, stream_followers
    from homeserver.launcher import skip_missing_bridge_registration
    from homeserver.server import HomeServer

    skipped = skip_missing_bridge_registration(config)
    if skipped is not None:
        logger.warning("ERP bridge registration %s does not exist: running without the bridge "
                       "(`homeserver run-all`, i.e. `make run`, generates it and starts the bridge)", skipped)
    hs = HomeServer(config)
    exit_code = 0
    ports: list = []
    connections = shutdown.Connections()

    from appservice.registration import RegistrationError
    from appservice.registry import AppServices
    from pushers.registry import Pushers
    from sync.engine import SyncEngine

    def listen() -> None:
        """Listeners open at once and answer 503 (and /health 503) until start-up is done."""
        from twisted.web import server

        metrics_resource = metrics.metrics_resource()
        forwarder = None
        if config.worker.multi_process:  # several processes: each forwards what it does not own
            from client_api.forwarding import Forwarder
            forwarder = Forwarder(hs)
        apis: dict[tuple[str, ...], Any] = {}  # one API site per set of API resources
        for listener in config.listeners:
            served = tuple(r for r in ("client", "federation") if r in listener.resources)
            api = apis.get(served)
            if api is None and served:
                api = apis[served] = build_site(hs, _route_registrars(served))
            site = server.Site(ListenerResource(
                hs, api.resource if api is not None else None,
                metrics_resource if "metrics" in listener.resources else None,
                internal="internal" in listener.resources, x_forwarded=listener.x_forwarded,
                forwarder=forwarder if "client" in listener.resources else None))
            site.requestFactory, site.protocol, site.noisy = LimitedRequest, LimitedChannel, False
            site.api_resource = api.api_resource if api is not None else None
            site.log = lambda request: None  # our own access line replaces Twisted's
            connections.track(site)
            # A deep accept queue: thousands of long-polling clients reconnect at once
            # after a restart or a network blip.
            if listener.tls:  # the federation certificate (generated on first start)
                from homeserver.federation.tls import certificate_paths, server_tls_options
                tls = server_tls_options(*certificate_paths(config))
                port = reactor.listenSSL(listener.port, site, tls, backlog=1024, interface=listener.bind_address)
            else:
                port = reactor.listenTCP(listener.port, site, backlog=1024, interface=listener.bind_address)
            ports.append(port)
            host = port.getHost()
            logger.info("listening for %s on %s://%s:%d (server_name %s)",
                        ",".join(listener.resources), "https" if listener.tls else "http",
                        host.host, host.port, config.server_name)

    async def start() -> None:
        listen()
        try:
            await threads.deferToThread(hs.open_database)
        except Exception as e:
            raise _StartupError(f"cannot open the database: {e}") from e
        await hs.start()
        hs.sync = SyncEngine(hs)
        await hs.sync.start()
        hs.appservices = AppServices(hs)
        await hs.appservices.start(push=config.worker.runs_job("appservices"))
        hs.persister.add_listener(hs.appservices.on_events)
        hs.sync.ephemeral_listeners.append(hs.appservices.on_ephemeral)
        await ephemeral_relay.attach(hs)  # the appservices job elsewhere than the streams
        await presence_job.attach(hs)  # presence kept by one process, mirrored by the sync processes
        await stream_followers.attach(hs)  # the per-user streams, announced and followed
        if hs.federation is not None:
            await hs.federation.attach_sync(hs.sync)  # outbound EDUs; starts the queues
        hs.pushers = Pushers(hs)
        if config.worker.runs_job("pushers"):
            await hs.pushers.start()
        hs.ratelimiter = Ratelimiter(hs)
        if hs.replication is not None:
            hs.replication.listen()  # every persist listener is in place
        hs.ready = True
        logger.info("start-up complete: serving requests")
        _tune_gc()

    def failed(f):
        nonlocal exit_code
        exit_code = 1
        if f.check(RegistrationError, _StartupError):
            logger.error("%s", f.getErrorMessage())
        else:
            logger.error("start-up failed: %s", f.getTraceback())
        reactor.stop()

    reactor.callWhenRunning(_stop_once_on_signals)
    reactor.callWhenRunning(lambda: defer.ensureDeferred(start()).addErrback(failed))
    reactor.addSystemEventTrigger("before", "shutdown", lambda: defer.ensureDeferred(shutdown.drain(hs, ports, connections)))
    reactor.addSystemEventTrigger("after", "shutdown", hs.shutdown)
    reactor.run()
    return exit_code


def _stop_once_on_signals() -> None:
    """SIGINT and SIGTERM stop the reactor once. Twisted's own handlers stop it on every
    signal, and Ctrl-C under `make run` brings two (the terminal's SIGINT, then the
    launcher's SIGTERM): the second raised ReactorNotRunning into the log mid-shutdown."""
    import signal

    from twisted.internet import reactor
    from twisted.internet.error import ReactorNotRunning

    stopping = False

    def stop_reactor() -> None:
        try:
            reactor.stop()
        except ReactorNotRunning:  # already stopping for another reason (a failed start-up)
            pass

    def stop(signum: int, frame: Any) -> None:
        nonlocal stopping
        if not stopping:
            stopping = True
            logger.info("received %s: shutting down", signal.Signals(signum).name)
            reactor.callFromThread(stop_reactor)

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)


class _StartupError(Exception):
    pass


def _route_registrars(resources) -> list:
    """What a listener serves: the client-server API and/or the federation API."""
    registrars = []
    if "client" in resources:
        from client_api.routes import register_all_routes
        registrars.append(register_all_routes)
    if "federation" in resources:
        from federation_api import register_all_routes as register_federation
        registrars.append(register_federation)
    return registrars


def cmd_run_all(args: argparse.Namespace) -> int:
    config = _load(args.config)
    setup_logging(config.log_level, config.log_format)
    from homeserver.launcher import run_all

    return run_all(Path(args.config), config)


def cmd_generate_config(args: argparse.Namespace) -> int:
    out = Path(args.output)
    if out.exists() and not args.force:
        print(f"homeserver: {out} exists; use --force to overwrite", file=sys.stderr)
        return 1
    out.write_text(generate_config_text(args.server_name, args.data_dir))
    print(f"wrote {out} for server {args.server_name} (data in {args.data_dir})")
    return 0


def cmd_register_user(args: argparse.Namespace) -> int:
    config = _load(args.config)
    setup_logging("WARNING")
    password = args.password
    if password is None:
        password = getpass.getpass("Password: ")
        if password != getpass.getpass("Confirm password: "):
            print("homeserver: passwords do not match", file=sys.stderr)
            return 1
    from homeserver.register_user import register_user_offline

    try:
        user_id = register_user_offline(config, args.user, password, args.admin)
    except Exception as e:
        print(f"homeserver: {e}", file=sys.stderr)
        return 1
    print(f"registered {user_id}{' (admin)' if args.admin else ''}")
    return 0


def cmd_writers(args: argparse.Namespace) -> int:
    config = _load(args.config)
    setup_logging("WARNING")
    from homeserver import writers_cli

    try:
        if args.set is None:
            return writers_cli.show(config)
        return writers_cli.set_writers(config, [w.strip() for w in args.set.split(",") if w.strip()],
                                       wait=not args.no_wait)
    except ValueError as e:
        print(f"homeserver: {e}", file=sys.stderr)
        return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="homeserver", description="Matrix homeserver for ERP chat")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="start the server")
    run.add_argument("--config", default=str(SAMPLE_CONFIG), help="config file (default: the sample)")
    run.set_defaults(fn=cmd_run)
    run_all = sub.add_parser("run-all", help="start the server and the ERP bridge (what `make run` does)")
    run_all.add_argument("--config", default=str(SAMPLE_CONFIG), help="config file (default: the sample)")
    run_all.set_defaults(fn=cmd_run_all)
    gen = sub.add_parser("generate-config", help="write a fresh config with new secrets")
    gen.add_argument("--server-name", required=True)
    gen.add_argument("--data-dir", default="data")
    gen.add_argument("--output", "-o", default="homeserver.yaml")
    gen.add_argument("--force", action="store_true")
    gen.set_defaults(fn=cmd_generate_config)
    reg = sub.add_parser("register-user", help="create a user from the command line")
    reg.add_argument("user", help="localpart or full user id")
    reg.add_argument("--password", help="asked for when omitted")
    reg.add_argument("--admin", action="store_true")
    reg.add_argument("--config", default=str(SAMPLE_CONFIG))
    reg.set_defaults(fn=cmd_register_user)
    wr = sub.add_parser("writers", help="show the writers sharing the rooms, or move rooms between them (several processes)")
    wr.add_argument("--set", metavar="W1,W2,...", help="the writers from now on: rooms move while they run")
    wr.add_argument("--no-wait", action="store_true", help="do not wait for the move to finish")
    wr.add_argument("--config", default=str(SAMPLE_CONFIG))
    wr.set_defaults(fn=cmd_writers)
    args = parser.parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    raise SystemExit(main())
