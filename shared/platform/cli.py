"""The command line every service shares: serve, migrate, and token management for operators."""
import argparse
import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

from shared.platform.auth import ApiToken, Permission, create_token, revoke_token
from shared.platform.db import make_engine, make_sessionmaker
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
    sub.add_parser("serve", help="run the HTTP API and the Kafka workers (default)")
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
    args = parser.parse_args(argv)

    settings = settings_factory()
    logging.basicConfig(level=settings.log_level, format=f"%(asctime)s {name} %(levelname)s %(name)s: %(message)s")
    if args.command == "migrate":
        upgrade(migrations_dir, settings.database_url)
        print(f"{name}: migrations applied")
    elif args.command == "tokens":
        asyncio.run(_tokens(args, settings.database_url, token_prefix, permissions))
    else:
        import uvicorn

        uvicorn.run(app_factory(settings), host=settings.host, port=settings.port, log_level="warning", access_log=False)


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
