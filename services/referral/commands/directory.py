"""The MKR/ETN directory and the routing table: members added and changed (`member.saved`), rules replaced."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert

from services.referral import access, events, routing
from services.referral.commands import UnitOfWork, now
from services.referral.models import Member, RoutingRuleSet
from services.referral.schemas import MemberIn, RoutingRulesBody
from shared.auth import require_own_municipality
from shared.errors import Problem, invalid
from shared.etags import if_match_allows, weak_etag


async def add_member(uow: UnitOfWork, command: MemberIn) -> Member:
    """A new member of the caller's municipality's directory; publishes `member.saved`."""
    require_own_municipality(uow.principal, command.municipality)
    member = Member(
        municipality=command.municipality,
        name=command.name,
        kind=command.kind,
        services=command.services,
        email=command.contact.email,
        phone=command.contact.phone,
        active=command.active,
    )
    async with uow.session.begin():
        uow.session.add(member)
        await uow.session.flush()
        await events.member_saved(uow.session, uow.settings, member)
    return member


@dataclass(frozen=True)
class SaveMember:
    """Change a member: `changes` are the body's fields by name (`contact` a dict of email and phone)."""

    member_id: uuid.UUID
    changes: dict[str, Any]


async def save_member(uow: UnitOfWork, command: SaveMember) -> Member:
    """Apply the changes to a member of the caller's municipality (404 for another's); `member.saved`."""
    changes = dict(command.changes)
    async with uow.session.begin():
        member = await access.own_member(uow.session, uow.principal, command.member_id, lock=True)
        contact = changes.pop("contact", None)
        if contact is not None:
            member.email = contact.get("email")
            member.phone = contact.get("phone")
        for name, value in changes.items():
            setattr(member, name, value)
        member.updated_at = now()
        await uow.session.flush()
        await events.member_saved(uow.session, uow.settings, member)
    return member


async def replace_routing_rules(uow: UnitOfWork, command: RoutingRulesBody, if_match: str | None = None) -> str:
    """The caller's municipality's routing table becomes `command.rules` (names unique, else 422); its new
    ETag. With `If-Match`, only over the table that was read (412 with the current ETag otherwise): two
    coordinators editing at once never overwrite each other unseen."""
    names = [rule.name for rule in command.rules]
    duplicates = {n for n in names if names.count(n) > 1}
    if duplicates:
        raise invalid(["body", "rules"], f"rule names must be unique: {sorted(duplicates)}")
    municipality = uow.principal.municipality
    values = {
        "municipality": municipality,
        "rules": [rule.model_dump(mode="json", exclude_none=True) for rule in command.rules],
        "updated_at": now(),
        "updated_by": uow.principal.sub,
    }
    async with uow.session.begin():
        # One writer per municipality's table at a time, the first one (no row yet) included.
        await uow.session.execute(
            sa.select(sa.func.pg_advisory_xact_lock(sa.func.hashtext(f"routing-rules:{municipality}")))
        )
        if if_match is not None:
            current = routing.rules_version(*await routing.rules_for(uow.session, municipality, uow.settings.profile))
            if not if_match_allows(if_match, current):
                raise Problem(412, "The routing rules changed since they were read; read them again.",
                              headers={"ETag": weak_etag(current)})
        await uow.session.execute(
            pg_insert(RoutingRuleSet)
            .values(**values)
            .on_conflict_do_update(index_elements=["municipality"], set_=values)
        )
    return routing.rules_etag(list(command.rules), False)

