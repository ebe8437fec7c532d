"""the police member of a case: an expiring protection order alerts that member, not every police user

Revision ID: 0003_police
Revises: 0003access
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_police"
down_revision: str | None = "0003access"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# (event type, recipient kind and ref before, after): the seeded rules this migration readdresses.
RULE_CHANGES = [("case.protection_order_expiring", ("role", "police"), ("member", "police_member_id"))]


def upgrade() -> None:
    op.create_table(
        "case_police",
        sa.Column("case_id", sa.Text, primary_key=True),
        sa.Column("municipality", sa.Text, nullable=False),
        sa.Column("referred_member_id", sa.Text),
        sa.Column("reporting_member_id", sa.Text),
    )
    _readdress(forward=True)


def _readdress(*, forward: bool) -> None:
    for event_type, before, after in RULE_CHANGES:
        old, new = (before, after) if forward else (after, before)
        op.execute(
            sa.text(
                "UPDATE alert_rules SET recipient_kind = :nk, recipient_ref = :nr "
                "WHERE event_type = :e AND recipient_kind = :ok AND recipient_ref = :or"
            ).bindparams(e=event_type, ok=old[0], nr=new[1], nk=new[0], **{"or": old[1]})
        )


def downgrade() -> None:
    _readdress(forward=False)
    op.drop_table("case_police")
