"""The partner directory over HTTP (`/api/partners`, the `partners` permission) and on the command
line (`python -m services.sync_bridge partners add|list|rotate|remove`), both through
services/sync_bridge/onboarding.py."""
import argparse
import asyncio
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Annotated

from fastapi import Header, Request
from fastapi.responses import JSONResponse
from sqlalchemy import delete, select

from services.sync_bridge.models import Partner
from services.sync_bridge.onboarding import Hub, Onboarded, PartnerIn, PartnerOut
from shared.platform import idempotency
from shared.platform.auth import Permission, api_router
from shared.platform.errors import Conflict, DomainError
from shared.platform.idempotency import IdempotencyKey
from shared.platform.openapi import CONFLICT

router = api_router("/api", ["partners"], Permission.PARTNERS)


@router.post("/partners", status_code=201, response_model=Onboarded, responses=CONFLICT,
             summary="Onboard a partner: its Kafka user, topics, ACLs and signing key; the bundle is shown this once"
                     " (and again only to the same request with the same Idempotency-Key)")
async def add_partner(new: PartnerIn, request: Request, key: Annotated[str | None, Header(
        alias=idempotency.HEADER, pattern=idempotency.KEY_PATTERN, description=idempotency.DESCRIPTION + (
            " Onboarding is several steps (the database, then Kafka): while the first request with the key is"
            " still at them, the same key is 409; the answer kept is encrypted like the signing keys."))] = None):
    hub: Hub = request.app.state.hub
    if key is None:
        return await hub.add(new)
    scope = f"token:{request.state.token_sha256}"
    digest = hashlib.sha256(json.dumps([request.url.path, new.model_dump(mode="json")], sort_keys=True).encode()).hexdigest()
    box = hub.require_box()
    async with hub.sessions() as session, session.begin():
        try:
            await idempotency.claim(session, scope, key, digest)
        except idempotency.Claimed as first:
            if first.answer is None:
                raise Conflict(f"the request with this {idempotency.HEADER} is still onboarding {new.id!r}, or its"
                               " process ended before it finished: GET /api/partners shows where it stands") from None
            return JSONResponse(json.loads(box.decrypt(first.answer)), status_code=201,
                                headers={idempotency.REPLAYED: "true"})
    try:
        onboarded = await hub.add(new)
    except BaseException:
        async with hub.sessions() as session, session.begin():
            made = await session.scalar(select(Partner.membership).where(Partner.id == new.id))
            if made != "active":  # nothing was made: the key may be used again
                await session.execute(delete(IdempotencyKey).where(IdempotencyKey.scope == scope,
                                                                   IdempotencyKey.key == key))
        raise
    async with hub.sessions() as session, session.begin():
        await idempotency.answered(session, scope, key, 201, box.encrypt(onboarded.model_dump_json().encode()))
    return onboarded


@router.get("/partners", response_model=list[PartnerOut], summary="The hub's partners (never a secret)")
async def list_partners(request: Request):
    return await request.app.state.hub.list()


@router.post("/partners/{partner_id}/rotate", response_model=Onboarded, responses=CONFLICT,
             summary="A new Kafka password and signing key (the bundle again, once); the old key verifies for KEY_GRACE_S")
async def rotate_partner(partner_id: str, request: Request):
    return await request.app.state.hub.rotate(partner_id)


@router.delete("/partners/{partner_id}", response_model=PartnerOut, responses=CONFLICT,
               summary="Remove a partner: its Kafka user, ACLs and keys go, its open links end")
async def remove_partner(partner_id: str, request: Request):
    return await request.app.state.hub.remove(partner_id)


# --- the command line --------------------------------------------------------------------------


def cli(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m services.sync_bridge partners",
                                     description="The hub's partner directory (SPEC section 10)")
    actions = parser.add_subparsers(dest="action", required=True)
    add = actions.add_parser("add", help="onboard a partner and print its bundle once")
    add.add_argument("--id", required=True)
    add.add_argument("--name", required=True)
    add.add_argument("--role", required=True, choices=["lead", "insourcing"])
    add.add_argument("--bundle-file", type=Path, help="write the bundle here (readable by its owner only) "
                                                      "instead of printing it")
    actions.add_parser("list", help="the partners, never a secret")
    rotate = actions.add_parser("rotate", help="a new password and signing key; prints the bundle once")
    rotate.add_argument("id")
    rotate.add_argument("--bundle-file", type=Path)
    remove = actions.add_parser("remove", help="remove a partner: user, ACLs and keys gone, its open links ended")
    remove.add_argument("id")
    args = parser.parse_args(argv)
    try:
        asyncio.run(_run(args))
    except DomainError as exc:
        raise SystemExit(exc.detail) from None


async def _run(args) -> None:
    from pydantic import ValidationError

    from services.sync_bridge.app import directory_of
    from services.sync_bridge.directory import secret_box
    from services.sync_bridge.settings import BridgeSettings
    from shared.platform.db import make_engine, make_sessionmaker

    settings = BridgeSettings()
    engine = make_engine(settings.database_url, pool_size=1)
    sessions = make_sessionmaker(engine)
    try:
        directory = directory_of(settings)
        async with sessions() as session:
            await directory.load(session)
        hub = Hub(settings, sessions, directory, secret_box(settings.secret_key))
        if args.action == "add":
            try:
                new = PartnerIn(id=args.id, name=args.name, role=args.role)
            except ValidationError as exc:
                raise SystemExit("; ".join(e["msg"].removeprefix("Value error, ") for e in exc.errors())) from None
            _show(await hub.add(new), args.bundle_file)
        elif args.action == "rotate":
            _show(await hub.rotate(args.id), args.bundle_file)
        elif args.action == "remove":
            gone = await hub.remove(args.id)
            print(f"removed {gone.id} ({gone.name}); its open links ended")
        else:
            for p in await hub.list():
                when = f"{p.created_at:%Y-%m-%d %H:%M}" if p.created_at else "-"
                print(f"{p.id}  {p.name}  {p.role or 'any'}  {p.status}  {p.source}  {when}")
    finally:
        await engine.dispose()


def _show(onboarded: Onboarded, path: Path | None) -> None:
    text = onboarded.bundle.model_dump_json(indent=2) + "\n"
    if path is None:
        sys.stdout.write(text)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # a file that was there keeps no wider mode
    with os.fdopen(fd, "w") as out:
        out.write(text)
    print(json.dumps({"partner": onboarded.partner.model_dump(mode="json"), "bundle_file": str(path)}))
