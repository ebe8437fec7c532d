"""h15t: a case's current and reporting municipality; accepted transfers (CONTRACT §10)

`case_facts.municipality` follows a transferred case; `reported_municipality` stays where it was
reported (reports count it there). `case_transfers` keeps each accepted move.

Revision ID: 0005_h15t_transfers
Revises: 0004_rule_service
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_h15t_transfers"
down_revision: str | None = "0004_rule_service"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.add_column("case_facts", sa.Column("reported_municipality", sa.Text, nullable=True))
    op.execute("UPDATE case_facts SET reported_municipality = municipality")
    op.alter_column("case_facts", "reported_municipality", nullable=False)
    op.create_index(
        "ix_case_facts_reported_municipality_reported_at", "case_facts", ["reported_municipality", "reported_at"]
    )
    op.create_table(
        "case_transfers",
        sa.Column("transfer_id", sa.Uuid, primary_key=True),
        sa.Column("case_id", sa.Uuid, nullable=False),
        sa.Column("from_municipality", sa.Text, nullable=False),
        sa.Column("to_municipality", sa.Text, nullable=False),
        sa.Column("from_case_number", sa.Text, nullable=False),
        sa.Column("to_case_number", sa.Text, nullable=False),
        sa.Column("accepted_at", TZ, nullable=False),
    )
    op.create_index("ix_case_transfers_to_accepted", "case_transfers", ["to_municipality", "accepted_at"])


def downgrade() -> None:
    op.drop_table("case_transfers")
    op.drop_index("ix_case_facts_reported_municipality_reported_at", table_name="case_facts")
    op.drop_column("case_facts", "reported_municipality")
