"""sealed free text, repaired directory contacts

Free text already stored (referral notes, consent-override, decline reasons, outcomes, plan-action
text) is sealed with the service's keys (CONTRACT §3). Directory rows written before request and
response shared one validation are repaired so every list can show them again: control and
unassigned characters leave names and services (an emptied name reads "?"), and an e-mail or phone
the answer model would refuse becomes null.

Revision ID: 0003_sealed
Revises: 0002
Create Date: 2026-12-02
"""

import json
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from pydantic import TypeAdapter, ValidationError

from shared.db import migration_settings
from shared.sealed import TextSealer, seal_stored
from shared.text import Email, Phone, printable_problem

revision: str = "0003_sealed"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SEALED = {
    "referrals": ("note", "consent_override_reason", "decline_reason", "outcome"),
    "plan_actions": ("action",),
}


def _clean(value: str) -> str:
    """The value without the characters the answer model refuses (a valid value stays as it is)."""
    if printable_problem(value) is None:
        return value
    return "".join(ch for ch in value if printable_problem(ch) is None).strip()


def _valid_or_none(adapter: TypeAdapter[str], value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return adapter.validate_python(value)
    except ValidationError:
        return None


def repair_members(connection: sa.Connection) -> int:
    emails, phones = TypeAdapter(Email), TypeAdapter(Phone)
    repaired = 0
    for row in connection.execute(sa.text("SELECT id, name, services, email, phone FROM members")).all():
        services = [cleaned for cleaned in (_clean(str(s)) for s in row.services or []) if cleaned]
        fixed = {
            "name": _clean(row.name) or "?",
            "services": services,
            "email": _valid_or_none(emails, row.email),
            "phone": _valid_or_none(phones, row.phone),
        }
        if fixed != {"name": row.name, "services": row.services, "email": row.email, "phone": row.phone}:
            connection.execute(
                sa.text(
                    "UPDATE members SET name = :name, services = CAST(:services AS jsonb), email = :email, "
                    "phone = :phone WHERE id = :id"
                ),
                {**fixed, "services": json.dumps(fixed["services"]), "id": row.id},
            )
            repaired += 1
    return repaired


def upgrade() -> None:
    connection = op.get_bind()
    repair_members(connection)
    sealer = TextSealer.from_settings(migration_settings(), "referral")
    for table, fields in SEALED.items():
        seal_stored(connection, sealer, table, fields)


def downgrade() -> None:
    """Sealed text stays sealed (opening it back into plaintext would undo the protection)."""
