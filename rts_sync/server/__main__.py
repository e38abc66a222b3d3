"""``rts-server`` / ``python -m rts_sync.server``: run the signaling server until SIGINT/SIGTERM.

Example::

    rts-server --app rtsapp000000000000000001:secret --port 8970 --limit p2p_qps=100 \
               --access-key AKLTexample:push-secret \
               --tls-cert /etc/rts/fullchain.pem --tls-key /etc/rts/privkey.pem

Exit codes: 0 after a clean shutdown, 1 when the server cannot start (e.g. the port is taken),
2 for bad arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import ssl
import sys
from typing import Dict, List, Optional, Sequence, Tuple

from aiohttp import web

from .._version import __version__
from .app import create_app
from .config import DEFAULT_HOST, DEFAULT_PORT, Limits, ServerConfig
from .tls import server_ssl_context

__all__ = ["main"]

log = logging.getLogger(__name__)

_PROG = "rts-server"


def _app_pair(text: str) -> Tuple[str, str]:
    app_id, sep, app_key = text.partition(":")
    if not sep or not app_id or not app_key:
        raise argparse.ArgumentTypeError("expected APP_ID:APP_KEY, got %r" % text)
    return app_id, app_key


def _key_pair(text: str) -> Tuple[str, str]:
    ak, sep, sk = text.partition(":")
    if not sep or not ak or not sk:
        raise argparse.ArgumentTypeError("expected ACCESS_KEY_ID:SECRET_KEY, got %r" % text)
    return ak, sk


def _key_apps(text: str) -> Tuple[str, Tuple[str, ...]]:
    ak, sep, apps = text.partition(":")
    app_ids = tuple(a.strip() for a in apps.split(",") if a.strip())
    if not sep or not ak or not app_ids:
        raise argparse.ArgumentTypeError("expected ACCESS_KEY_ID:APP_ID[,APP_ID...], got %r" % text)
    return ak, app_ids


def _limit_pair(text: str) -> Tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError("expected NAME=VALUE, got %r" % text)
    return name.strip(), value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=_PROG, description="The rts_sync signaling server (Volcengine RTS API compatible).",
        epilog="Limits (NAME=VALUE): %s. Recommended cloud-like rates: p2p_qps=100 room_qps=65 "
               "server_qps=20." % ", ".join(sorted(Limits.names())))
    parser.add_argument("--app", action="append", type=_app_pair, required=True,
                        metavar="APP_ID:APP_KEY", help="an app to serve (repeatable)")
    parser.add_argument("--host", default=DEFAULT_HOST, help="address to listen on (%(default)s)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="port (%(default)s)")
    parser.add_argument("--access-key", action="append", type=_key_pair, default=[],
                        metavar="AK:SK", help="an access key id and secret key that may call the "
                        "push API (POST /?Action=SendUnicast|SendBroadcast, Volcengine V4 "
                        "signature; repeatable)")
    parser.add_argument("--limit", action="append", type=_limit_pair, default=[],
                        metavar="NAME=VALUE", help="set a named limit (repeatable)")
    parser.add_argument("--redis", default=None, metavar="redis://HOST:PORT/DB",
                        help="cluster mode: share presence, rooms and routing with the other "
                        "nodes through this Redis (needs the 'cluster' extra: pip install "
                        "'rts_sync[cluster]')")
    parser.add_argument("--access-key-apps", action="append", type=_key_apps, default=[],
                        metavar="AK:APP_ID[,APP_ID...]", help="limit access key AK to these apps "
                        "(repeatable; a key not limited may push to every app)")
    parser.add_argument("--tls-cert", default=None, metavar="FILE",
                        help="serve wss:// and https:// with this certificate chain (PEM; needs "
                        "--tls-key)")
    parser.add_argument("--tls-key", default=None, metavar="FILE",
                        help="the private key of --tls-cert (PEM)")
    parser.add_argument("--log-level", default="INFO", type=str.upper,
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="(%(default)s)")
    parser.add_argument("--version", action="version", version="%(prog)s " + __version__)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the server; returns the process exit code."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help / --version (0) or a usage error (2)
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    apps: Dict[str, str] = {}
    for app_id, app_key in args.app:
        if app_id in apps:
            return _usage_error(parser, "app %s given twice" % app_id)
        apps[app_id] = app_key
    limits: List[Tuple[str, str]] = args.limit
    keys: Dict[str, str] = {}
    for ak, sk in args.access_key:
        if ak in keys:
            return _usage_error(parser, "access key %s given twice" % ak)
        keys[ak] = sk
    scopes: Dict[str, Tuple[str, ...]] = {}
    for ak, app_ids in args.access_key_apps:
        scopes[ak] = scopes.get(ak, ()) + app_ids
    if (args.tls_cert is None) != (args.tls_key is None):
        return _usage_error(parser, "--tls-cert and --tls-key go together")
    tls = (args.tls_cert, args.tls_key) if args.tls_cert is not None else None
    try:
        config = ServerConfig(apps=apps, host=args.host, port=args.port,
                              limits=Limits.from_mapping(dict(limits)), access_keys=keys,
                              redis_url=args.redis, tls=tls, access_key_apps=scopes)
        ssl_context = server_ssl_context(*tls) if tls is not None else None
    except ValueError as exc:
        return _usage_error(parser, str(exc))
    logging.basicConfig(level=args.log_level,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return asyncio.run(_serve(config, ssl_context))
    except KeyboardInterrupt:  # a platform without loop signal handlers
        return 0


def _usage_error(parser: argparse.ArgumentParser, message: str) -> int:
    parser.print_usage(sys.stderr)
    sys.stderr.write("%s: error: %s\n" % (_PROG, message))
    return 2


async def _serve(config: ServerConfig, ssl_context: Optional[ssl.SSLContext] = None) -> int:
    runner = web.AppRunner(create_app(config), handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port, ssl_context=ssl_context)
    try:
        await site.start()
    except OSError as exc:
        log.error("cannot listen on %s:%d: %s", config.host, config.port, exc)
        await runner.cleanup()
        return 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # Windows: KeyboardInterrupt instead
            pass
    log.info("rts-server %s listening on %s%s (apps: %s; push API %s)", __version__,
             ", ".join("%s:%s" % (a[0], a[1]) for a in runner.addresses),
             " with TLS" if ssl_context is not None else "",
             ", ".join(sorted(config.apps)),
             "keys: " + ", ".join(sorted(config.access_keys)) if config.access_keys
             else "off: no --access-key")
    try:
        await stop.wait()
    finally:
        log.info("shutting down")
        await runner.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
