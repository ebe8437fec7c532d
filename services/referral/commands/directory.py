"""The MKR/ETN directory and the routing table: members added and changed (`member.saved`), rules replaced."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy.dialects.postgresql import insert as pg_insert

from services.referral import access, events
from services.referral.commands import UnitOfWork, now
from services.referral.models import Member, RoutingRuleSet
from services.referral.schemas import MemberIn, RoutingRulesBody
from shared.auth import require_own_municipality
from shared.errors import invalid


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


async def replace_routing_rules(uow: UnitOfWork, command: RoutingRulesBody) -> None:
    """The caller's municipality's routing table becomes `command.rules` (names unique, else 422)."""
    names = [rule.name for rule in command.rules]
    duplicates = {n for n in names if names.count(n) > 1}
    if duplicates:
        raise invalid(["body", "rules"], f"rule names must be unique: {sorted(duplicates)}")
    values = {
        "municipality": uow.principal.municipality,
        "rules": [rule.model_dump(mode="json", exclude_none=True) for rule in command.rules],
        "updated_at": now(),
        "updated_by": uow.principal.sub,
    }
    async with uow.session.begin():
        await uow.session.execute(
            pg_insert(RoutingRuleSet)
            .values(**values)
            .on_conflict_do_update(index_elements=["municipality"], set_=values)
        )
