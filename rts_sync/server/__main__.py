"""``rts-server`` / ``python -m rts_sync.server``: run the signaling server until SIGINT/SIGTERM.

Example::

    rts-server --app rtsapp000000000000000001:secret --port 8970 --limit p2p_qps=100 \
               --access-key AKLTexample:push-secret

Exit codes: 0 after a clean shutdown, 1 when the server cannot start (e.g. the port is taken),
2 for bad arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from typing import Dict, List, Optional, Sequence, Tuple

from aiohttp import web

from .._version import __version__
from .app import create_app
from .config import DEFAULT_HOST, DEFAULT_PORT, Limits, ServerConfig

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
    try:
        config = ServerConfig(apps=apps, host=args.host, port=args.port,
                              limits=Limits.from_mapping(dict(limits)), access_keys=keys)
    except ValueError as exc:
        return _usage_error(parser, str(exc))
    logging.basicConfig(level=args.log_level,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return asyncio.run(_serve(config))
    except KeyboardInterrupt:  # a platform without loop signal handlers
        return 0


def _usage_error(parser: argparse.ArgumentParser, message: str) -> int:
    parser.print_usage(sys.stderr)
    sys.stderr.write("%s: error: %s\n" % (_PROG, message))
    return 2


async def _serve(config: ServerConfig) -> int:
    runner = web.AppRunner(create_app(config), handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port)
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
    log.info("rts-server %s listening on %s (apps: %s; push API %s)", __version__,
             ", ".join("%s:%s" % (a[0], a[1]) for a in runner.addresses),
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
