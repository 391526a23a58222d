"""The command line every service shares: serve, migrate, and for operators token management and
the dead letters (as over HTTP, each resolution recorded with who and when)."""
import argparse
import asyncio
import getpass
import logging
from collections.abc import Callable
from pathlib import Path

from shared.platform.auth import ApiToken, Permission, create_token, revoke_token
from shared.platform.db import make_engine, make_sessionmaker
from shared.platform.dead_letters import discard, list_dead_letters, replay
from shared.platform.errors import DomainError
from shared.platform.inbox import DeadLetter, InboxConsumer
from shared.platform.migrations import upgrade


def main(
    name: str,
    settings_factory: Callable[[], object],
    app_factory: Callable[[object], object],
    migrations_dir: Path,
    token_prefix: str,
    permissions: list[Permission],
    argv: list[str] | None = None,
) -> None:
    parser = argparse.ArgumentParser(prog=name, description=f"The {name.replace('_', ' ')} service")
    sub = parser.add_subparsers(dest="command")
    serve_command = sub.add_parser("serve", help="run the HTTP API and the Kafka workers (default)")
    serve_command.add_argument("--api-only", action="store_true",
                               help="the HTTP API alone; its writes are published by a `worker` beside it")
    sub.add_parser("worker", help="the outbox relay, the Kafka consumer and the background jobs alone, answering "
                                  "/healthz, /readyz and /metrics on the worker port (default the port + 100)")
    sub.add_parser("migrate", help="apply the database migrations")
    tokens = sub.add_parser("tokens", help="create, list or revoke API tokens").add_subparsers(dest="action", required=True)
    create = tokens.add_parser("create", help="create a token and print it once")
    create.add_argument("--name", required=True)
    create.add_argument(
        "--permission", action="append", choices=[p.value for p in permissions], help="repeatable; default: all"
    )
    tokens.add_parser("list")
    revoke = tokens.add_parser("revoke")
    revoke.add_argument("token_id")
    letters = sub.add_parser("dead-letters", help="list, replay or discard parked messages").add_subparsers(
        dest="action", required=True
    )
    listing = letters.add_parser("list", help="the unresolved ones, newest first")
    listing.add_argument("--all", action="store_true", help="the replayed and discarded ones too")
    letters.add_parser("replay", help="apply one again through the inbox (at most once)").add_argument("id", type=int)
    letters.add_parser("discard", help="set one aside for good").add_argument("id", type=int)
    args = parser.parse_args(argv)

    settings = settings_factory()
    logging.basicConfig(level=settings.log_level, format=f"%(asctime)s {name} %(levelname)s %(name)s: %(message)s")
    if args.command == "migrate":
        upgrade(migrations_dir, settings.database_url)
        print(f"{name}: migrations applied")
    elif args.command == "tokens":
        asyncio.run(_tokens(args, settings.database_url, token_prefix, permissions))
    elif args.command == "dead-letters":
        asyncio.run(_dead_letters(args, settings, app_factory))
    elif args.command == "worker":
        from shared.platform.http_server import serve_worker

        settings.process = "worker"
        serve_worker(app_factory(settings), settings)
    else:
        from shared.platform.http_server import serve

        if getattr(args, "api_only", False):
            settings.process = "api"
        serve(app_factory(settings), settings)


async def _tokens(args, database_url: str, prefix: str, permissions: list[Permission]) -> None:
    from sqlalchemy import select

    engine = make_engine(database_url, pool_size=1)
    try:
        async with make_sessionmaker(engine)() as session, session.begin():
            if args.action == "create":
                chosen = [Permission(p) for p in (args.permission or [p.value for p in permissions])]
                row, token = await create_token(session, args.name, chosen, prefix)
                print(f"id: {row.id}\npermissions: {','.join(row.permissions)}\ntoken: {token}")
            elif args.action == "list":
                for row in await session.scalars(select(ApiToken).order_by(ApiToken.created_at)):
                    state = f"revoked {row.revoked_at:%Y-%m-%d %H:%M}" if row.revoked_at else "active"
                    print(f"{row.id}  {row.name}  {','.join(row.permissions)}  {state}")
            elif not await revoke_token(session, args.token_id):
                raise SystemExit(f"no active token with id {args.token_id}")
            else:
                print(f"revoked {args.token_id}")
    finally:
        await engine.dispose()


async def _dead_letters(args, settings, app_factory: Callable[[object], object]) -> None:
    who = f"command line ({getpass.getuser()})"
    engine = make_engine(settings.database_url, pool_size=1)
    sessions = make_sessionmaker(engine)
    try:
        async with sessions() as session, session.begin():
            if args.action == "list":
                for letter in await list_dead_letters(session, include_resolved=args.all):
                    print(_letter_line(letter))
                return
            if args.action == "replay":
                answer = await replay(session, _replayer(app_factory(settings), sessions), args.id, who)
            else:
                answer = await discard(session, args.id, who)
    except DomainError as exc:
        raise SystemExit(exc.detail) from None
    finally:
        await engine.dispose()
    line = f"dead letter {answer.id}: {answer.outcome}"
    if answer.resolved_at is None:
        raise SystemExit(line)  # parked again: a failure to whoever scripted the call
    print(line)


def _replayer(app, sessions) -> InboxConsumer:
    """The service's own inbox path: the handler and key rings of the app its composition root builds
    (nothing started). A replay reads the message from the database, so it needs no Kafka consumer."""
    spec = app.state.spec
    return InboxConsumer(sessions, None, spec.handler, name=spec.name, signatures=spec.signatures)


def _letter_line(letter: DeadLetter) -> str:
    kept = " (truncated: cannot be replayed)" if letter.truncated else ""
    line = (f"{letter.id}  {letter.parked_at:%Y-%m-%d %H:%M:%S}  {letter.topic}[{letter.partition}]@{letter.offset}"
            f"  {letter.type or '-'}  {letter.event_id or '-'}  {letter.size or 0} bytes{kept} sha256:{letter.sha256 or '-'}"
            f"  {letter.reason}")
    if letter.resolved_at:
        line += f"  ({letter.resolution} by {letter.resolved_by} at {letter.resolved_at:%Y-%m-%d %H:%M:%S})"
    return line
