"""``openanalyst``: start the server, and the admin commands.

    openanalyst --serve [PORT] [--host HOST]     run the API server (default 127.0.0.1:3080)
    openanalyst sandbox build [--force] …        build the sandbox image (toolrunner.image)
    openanalyst audit verify FILE --public-key K [--checkpoint NOTE]
                                                 check an audit export offline (server.audit.cli)
    openanalyst audit verify --proof P --public-key K   check one record's inclusion proof
    openanalyst keys create [--tenant T]         make an API key (printed once)
    openanalyst keys revoke ID

Uvicorn runs in-process with the app factory and one worker. SIGINT/SIGTERM stop it gracefully and the
process exits 0 (uvicorn's own handler would re-raise the signal and exit 143).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Iterator, Sequence
from types import FrameType
from typing import TYPE_CHECKING, Any

import uvicorn
from pydantic import ValidationError
from pydantic_settings import SettingsError

from server.http11 import configured, default_max_connections
from server.settings import Settings

if TYPE_CHECKING:
    from server.services import Services

EXIT_USAGE = 2
LIMITS_HELP = """request limits (environment; docs/request-limits.md):
  OPENANALYST_MAX_HEADER_BYTES  request line + headers (default 16384; past it 431, connection closed)
  OPENANALYST_MAX_HEADERS       header fields per request (default 100; 431 TOO_MANY_HEADERS)
  OPENANALYST_MAX_BODY_BYTES    request body (default 2097152; 413 PAYLOAD_TOO_LARGE)
  OPENANALYST_MAX_JSON_DEPTH    nesting of a JSON body or tool input (default 64; 422 JSON_TOO_DEEP)
  OPENANALYST_MAX_JSON_ITEMS    values and keys in one (default 100000; 422 JSON_TOO_LARGE)
  OPENANALYST_HTTP_HEAD_TIMEOUT_S  request line + headers must arrive within (default 10; 408, closed)
  OPENANALYST_HTTP_IDLE_TIMEOUT_S  a connection sending nothing is closed after (default 5)
  OPENANALYST_MAX_CONNECTIONS   open connections (default: from the fd limit; 503 TOO_MANY_CONNECTIONS)"""


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment plus CLI overrides; an invalid value exits naming the setting."""
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except SettingsError as exc:  # a value the environment source cannot even decode (bad JSON)
        print(f"openanalyst: invalid setting: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE) from None
    except ValidationError as exc:
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"]) or "settings"
            name = loc if loc.isupper() else f"OPENANALYST_{loc.upper()}"  # aliases are the env names
            print(f"openanalyst: invalid setting {name}: {err['msg']}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE) from None


def startup_line(settings: Settings, host: str, port: int, providers: list[str]) -> str:
    mode = ("single-tenant (X-Tenant-ID refused)" if settings.tenancy == "single"
            else "owner by default, X-Tenant-ID selects a tenant")
    auth = "API key required" if settings.require_api_key else "no authentication"
    shown = f"[{host}]" if ":" in host else host
    return (f"OpenAnalyst server listening on http://{shown}:{port} | tenancy: {mode}; {auth}"
            f" | data: {settings.data_dir} | providers: {', '.join(providers) or 'none'}")


class _Server(uvicorn.Server):
    """Uvicorn with a startup line after binding and signal handling that exits 0."""

    def __init__(self, config: uvicorn.Config, settings: Settings) -> None:
        super().__init__(config)
        self.settings = settings

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.should_exit or not self.servers:
            return
        bound = [s.getsockname() for srv in self.servers for s in (srv.sockets or ())]
        host, port = (bound[0][0], bound[0][1]) if bound else (self.settings.host, self.settings.port)
        names = self._services.credentials.env_provider_names if self._services is not None else []
        logging.getLogger("server.startup").info(startup_line(self.settings, host, port, names))

    @property
    def _services(self) -> Services | None:
        """The running app's services (None before its lifespan ran), under uvicorn's middleware wrappers."""
        app = self.config.loaded_app
        while hasattr(app, "app") and not hasattr(app, "state"):
            app = app.app
        services: Services | None = getattr(getattr(app, "state", None), "services", None)
        return services

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """End turns and live streams first, so open SSE responses finish instead of holding the drain."""
        for server in self.servers:
            server.close()  # stop accepting first, so no new stream opens after the ones below end
        services = self._services
        if services is not None:
            await services.turns.shutdown()
            services.events.close_all()
        await super().shutdown(sockets)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def stop(sig: int, frame: FrameType | None) -> None:
            if self.should_exit and sig == signal.SIGINT:
                self.force_exit = True
            self.should_exit = True

        previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def _leave_cwd(settings: Settings) -> Settings:
    """Resolve every relative path of the settings, then ``chdir("/")``: a server whose cwd is inside the
    owner's workspace pins that directory's mounts (the nosuid guard could never be lifted, "target is busy",
    docs/workspace-quota.md §2). Paths read later (skills, the egress socket directory) keep their meaning."""
    resolved = settings.model_copy(update={
        "skills_dirs": [p.expanduser().resolve() for p in settings.skills_dirs],
        "egress_socket_dir": (settings.egress_socket_dir.expanduser().resolve()
                              if settings.egress_socket_dir is not None else None)})
    os.chdir("/")
    return resolved


def serve(settings: Settings) -> int:
    """Run the app of ``server.app.build_app`` until SIGINT/SIGTERM."""
    from server.app import build_app

    # h11 (not httptools, which buffers a request head of any size) with the header budget: see server.http11.
    from server.observability.logging import log_config, secret_values

    logs = log_config(settings.log_level, settings.log_format, secret_values(settings))
    cap = settings.max_connections or default_max_connections()
    protocol = configured(head_timeout_s=settings.http_head_timeout_s, idle_timeout_s=settings.http_idle_timeout_s,
                          max_connections=cap)
    settings = _leave_cwd(settings)
    config = uvicorn.Config(lambda: build_app(settings), factory=True, host=settings.host,
                            port=settings.port, workers=1, log_level=settings.log_level, log_config=logs,
                            access_log=settings.access_log,
                            timeout_graceful_shutdown=5, lifespan="on", http=protocol,
                            h11_max_incomplete_event_size=settings.max_header_bytes,
                            timeout_keep_alive=settings.http_idle_timeout_s,  # type: ignore[arg-type]
                            limit_concurrency=cap + 1)  # ours refuses connections; uvicorn's counts tasks too
    server = _Server(config, settings)
    server.run()
    return 0 if server.started else 1


async def _keys(settings: Settings, args: argparse.Namespace) -> int:
    from server.auth import ApiKeys
    from server.store.open import make_store

    db = make_store(settings)
    await db.open()
    try:
        keys = ApiKeys(db)
        if args.keys_command == "create":
            created = await keys.create(args.tenant)
            bound = f"bound to tenant {created.tenant_id}" if created.tenant_id else "not bound to a tenant"
            print(f"API key {created.id} ({bound}); shown once, store it now:", file=sys.stderr)
            print(created.key)
        else:
            await keys.revoke(args.id)
            print(f"revoked {args.id}", file=sys.stderr)
        return 0
    finally:
        await db.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="openanalyst", description="OpenAnalyst agent server.",
                                     epilog=LIMITS_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--serve", nargs="?", const=-1, type=int, metavar="PORT",
                        help="run the HTTP server (default port 3080)")
    parser.add_argument("--host", help="address to listen on (default 127.0.0.1; 0.0.0.0 for all)")
    parser.add_argument("--data-dir", help="data directory (default ~/.openanalyst/server)")
    commands = parser.add_subparsers(dest="command")
    sandbox = commands.add_parser("sandbox", help="sandbox image: build")
    sandbox.add_argument("rest", nargs=argparse.REMAINDER)
    audit = commands.add_parser("audit", help="audit log: verify FILE --public-key K, or --proof P")
    audit.add_argument("rest", nargs=argparse.REMAINDER)
    keys = commands.add_parser("keys", help="API keys for require_api_key deployments")
    key_commands = keys.add_subparsers(dest="keys_command", required=True)
    create = key_commands.add_parser("create", help="create a key (printed once)")
    create.add_argument("--tenant", help="bind the key to this tenant ('owner' for the owner)")
    revoke = key_commands.add_parser("revoke", help="revoke a key by id")
    revoke.add_argument("id")
    args = parser.parse_args(argv)

    if args.command == "sandbox":
        if not args.rest or args.rest[0] != "build":
            parser.error("usage: openanalyst sandbox build [--force] [--base-image REF]")
        from toolrunner.image import main as image_main

        return image_main(args.rest[1:]) or 0
    if args.command == "audit":
        from server.audit.cli import main as audit_main

        return audit_main(args.rest)
    if args.command == "keys":
        return asyncio.run(_keys(load_settings(data_dir=args.data_dir), args))
    if args.serve is None:
        parser.print_help()
        return EXIT_USAGE
    port = None if args.serve == -1 else args.serve
    if port is not None and not 0 <= port <= 65535:
        parser.error(f"port {port} is out of range 0-65535")
    return serve(load_settings(port=port, host=args.host, data_dir=args.data_dir))


if __name__ == "__main__":
    sys.exit(main())
