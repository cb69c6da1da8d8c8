"""The `portico` console script: serve, migrate, and the operator commands of runtime.md."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

from portico import db
from portico.settings import Settings
from services.shared.errors import InputError

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def main(argv: list[str] | None = None) -> None:
    parser = _parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help()
        sys.exit(2)
    args.run(args, Settings())


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="portico", description=__doc__)
    sub = parser.add_subparsers(title="commands")

    serve = sub.add_parser("serve", help="check migrations and serve the API with uvicorn")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--workers", type=int, default=1)
    # "auto": uvloop and httptools (uvicorn[standard]) where installed; the others are for
    # comparing them (bench/http.py) or for a platform without them.
    serve.add_argument(
        "--loop", choices=("auto", "uvloop", "asyncio"), default="auto", help="event loop"
    )
    serve.add_argument(
        "--http", choices=("auto", "httptools", "h11"), default="auto", help="HTTP parser"
    )
    serve.set_defaults(run=_serve)

    sub.add_parser("migrate", help="apply the database migrations").set_defaults(run=_migrate)
    sub.add_parser(
        "worker", help="deliver outgoing mail and sync mailboxes until stopped"
    ).set_defaults(run=_worker)

    create = sub.add_parser("create-firm", help="create a firm and its owner")
    create.add_argument("--name", required=True)
    create.add_argument("--slug", required=True)
    create.add_argument("--owner-email", required=True)
    create.add_argument("--owner-name", default="")
    create.add_argument("--owner-password")
    create.set_defaults(run=_create_firm)

    password = sub.add_parser("set-password", help="set a staff member's password")
    password.add_argument("--firm", required=True, help="the firm's slug")
    password.add_argument("--email", required=True)
    password.add_argument("--password")
    password.set_defaults(run=_set_password)

    reset = sub.add_parser(
        "reset-authenticator",
        help="remove a person's authenticator app and end their sessions (a lost phone)",
    )
    reset.add_argument("--firm", required=True, help="the firm's slug")
    reset.add_argument("--email", required=True)
    reset.add_argument("--client", action="store_true", help="a portal user, not staff")
    reset.set_defaults(run=_reset_authenticator)

    sub.add_parser("seed-demo", help="create the demo firm").set_defaults(run=_seed_demo)
    sub.add_parser("export-schema", help="print the GraphQL SDL").set_defaults(run=_export_schema)

    importer = sub.add_parser("import-contacts", help="import contacts from a CSV file")
    importer.add_argument("--firm", required=True, help="the firm's slug")
    importer.add_argument("file", type=Path)
    importer.set_defaults(run=_import_contacts)

    stored = sub.add_parser("files", help="the file store (PORTICO_FILE_STORE)")
    files_sub = stored.add_subparsers(title="file commands")
    move = files_sub.add_parser(
        "move", help="move every file content from the other store into this one"
    )
    move.add_argument("--to", required=True, choices=("database", "folder"))
    move.set_defaults(run=_move_files)
    return parser


def _with_db(settings: Settings, work: Callable[[], Awaitable[None]]) -> None:
    async def run() -> None:
        await db.init_db(settings.resolved_database_url)
        try:
            await work()
        finally:
            await db.close_db()

    try:
        asyncio.run(run())
    except InputError as exc:
        sys.exit(f"error: {exc}")


def _secret(given: str | None, option: str, env_name: str, prompt: str) -> str:
    """A password from its option, its environment variable, or (on a terminal) a prompt."""
    value = given or os.environ.get(env_name)
    if value:
        return value
    if not sys.stdin.isatty():
        sys.exit(f"error: give the password with {option} or {env_name}")
    return getpass.getpass(prompt)


def _migrate(args: argparse.Namespace, settings: Settings) -> None:
    asyncio.run(db.migrate(settings.resolved_database_url))
    print("migrations applied")


def _worker(args: argparse.Namespace, settings: Settings) -> None:
    import signal

    from portico import heap
    from portico.logs import configure_logging
    from portico.worker import run_background
    from services.shared.pubsub import bus_for

    configure_logging()

    async def work() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        # Events of synced mail reach subscribers of the API processes through Redis
        # (PORTICO_REDIS_URL); without it they stay in this process.
        bus = bus_for(settings)
        frozen = heap.settle()  # started: what it holds is not walked again (portico/heap.py)
        logging.getLogger("portico.worker").info("heap settled: %d objects frozen", frozen)
        try:
            await run_background(settings, bus, stop)
        finally:
            await bus.close()

    _with_db(settings, work)


def _serve(args: argparse.Namespace, settings: Settings) -> None:
    import uvicorn

    if args.workers > 1 and settings.resolved_database_url.startswith("sqlite"):
        sys.exit("error: SQLite serves one process; use PostgreSQL for --workers above 1")
    if settings.production:
        _require_migrated(settings)
    else:
        # The embedded default: migrate, and give a new (firm-less) database the demo firm,
        # but only on a loopback address: its password is published in the README.
        asyncio.run(db.migrate(settings.resolved_database_url))
        if (args.host or settings.host) in LOOPBACK:
            _seed_demo(args, settings, only_into_empty=True)
    host, port = args.host or settings.host, args.port or settings.port
    # The app (built by uvicorn, in this or a worker process) reads its settings anew:
    # pass the address on, so links in mail point here unless PORTICO_PUBLIC_URL says else.
    os.environ.update(PORTICO_HOST=host, PORTICO_PORT=str(port))
    uvicorn.run(
        "portico.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=args.workers,
        loop=args.loop,
        http=args.http,
        access_log=False,  # portico.access logs one structured line per request
        # A WebSocket message may be as large as an HTTP body: uvicorn refuses a bigger frame
        # from its header (close 1009), before reading it; the app checks it again.
        ws_max_size=settings.max_body_bytes,
        # The client address behind a proxy elsewhere: else every client shares the proxy's,
        # and with it one budget of failed sign-ins.
        proxy_headers=True,
        forwarded_allow_ips=settings.forwarded_allow_ips,
        timeout_keep_alive=settings.keep_alive_seconds,
        log_level="info",
    )


def _require_migrated(settings: Settings) -> None:
    async def check() -> None:
        await db.init_db(settings.resolved_database_url)
        try:
            pending = await db.pending_migrations()
        finally:
            await db.close_db()
        if pending:
            sys.exit(f"error: migrations pending ({', '.join(pending)}): run `portico migrate`")

    asyncio.run(check())


def _create_firm(args: argparse.Namespace, settings: Settings) -> None:
    from services.firm.firms import create_firm

    password = _secret(
        args.owner_password, "--owner-password", "PORTICO_OWNER_PASSWORD", "Owner password: "
    )

    async def work() -> None:
        firm, owner = await create_firm(
            args.name, args.slug, args.owner_email, args.owner_name, password
        )
        print(f"created firm {firm.slug} with owner {owner.email}")

    _with_db(settings, work)


def _set_password(args: argparse.Namespace, settings: Settings) -> None:
    from services.firm.firms import set_staff_password

    password = _secret(args.password, "--password", "PORTICO_PASSWORD", "New password: ")

    async def work() -> None:
        staff = await set_staff_password(args.firm, args.email, password)
        print(f"password set for {staff.email}")

    _with_db(settings, work)


def _reset_authenticator(args: argparse.Namespace, settings: Settings) -> None:
    from services.firm.enrollment import reset_by_address

    async def work() -> None:
        person, ended = await reset_by_address(args.firm, args.email, args.client, settings)
        print(f"authenticator reset for {person.email}: {ended} session(s) ended")

    _with_db(settings, work)


def _seed_demo(args: argparse.Namespace, settings: Settings, only_into_empty: bool = False) -> None:
    from models import Firm
    from services.firm import demo

    async def work() -> None:
        if only_into_empty and await Firm.exists():
            return
        if await demo.seed_demo():
            print(f"demo firm '{demo.DEMO_SLUG}': sign in as {demo.DEMO_OWNER_EMAIL}")
        else:
            print(f"demo firm '{demo.DEMO_SLUG}' exists already")

    _with_db(settings, work)


def _export_schema(args: argparse.Namespace, settings: Settings) -> None:
    from resolvers.root import build_schema

    print(build_schema(settings).as_str())


def _import_contacts(args: argparse.Namespace, settings: Settings) -> None:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from services.crm import importer
    from services.shared.scope import FirmScope

    try:
        # Bytes: the importer decodes them (UTF-8, BOM tolerated) by the same rules as the API.
        data = args.file.read_bytes()
    except OSError as exc:
        sys.exit(f"error: cannot read {args.file}: {exc.strerror or exc}")
    failed: list[importer.ImportFileError] = []

    async def work() -> None:
        scope = await FirmScope.for_slug(args.firm)
        # The bar goes to stderr, and only to a terminal: stdout carries just the summary.
        console = Console(stderr=True)
        bar = Progress(
            TextColumn("importing"),
            BarColumn(),
            MofNCompleteColumn(),
            console=console,
            transient=True,
            disable=not console.is_terminal,
        )
        task = bar.add_task("import", total=None)

        def advance(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        with bar:
            try:
                result = await importer.import_contacts(
                    scope, data, settings.max_import_rows, progress=advance
                )
            except importer.ImportFileError as exc:
                failed.append(exc)  # reported below, one error a line
                return
        print(
            f"created {result.created}, updated {result.updated}, "
            f"rejected {len(result.rejected_rows)}"
        )
        for error in result.errors:
            print(f"  {error.message}")

    _with_db(settings, work)
    if failed:
        for error in failed[0].errors:
            print(f"error: {error.message}", file=sys.stderr)
        sys.exit("nothing imported")


def _move_files(args: argparse.Namespace, settings: Settings) -> None:
    from services.shared import files

    if settings.file_store != args.to:
        # Still readable (reads fall back to the other store), but new files go elsewhere.
        print(
            f"note: PORTICO_FILE_STORE is {settings.file_store}: new files still go there",
            file=sys.stderr,
        )
    counts: list[files.Moved] = []

    async def work() -> None:
        counts.append(await files.move(settings, args.to))

    _with_db(settings, work)
    [done] = counts
    print(
        f"moved {done.moved}, already there {done.already_there}, failed {done.failed}, "
        f"gone meanwhile {done.gone}"
    )
    if done.failed:
        sys.exit("some contents did not match their SHA-256 and stayed where they were")
