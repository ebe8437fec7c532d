"""h15t: transfers of a case between municipalities (CONTRACT §10)

Revision ID: 0007_h15t_transfers
Revises: 0005_census
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007_h15t_transfers"
down_revision: str | None = "0005_census"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "case_transfers",
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("case_id", sa.Uuid, sa.ForeignKey("cases.id"), nullable=False),
        sa.Column("from_municipality", sa.Text, nullable=False),
        sa.Column("to_municipality", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("consent_given_at", TZ, nullable=False),
        sa.Column("from_case_number", sa.Text, nullable=False),
        sa.Column("to_case_number", sa.Text, nullable=True),
        sa.Column("requested_at", TZ, nullable=False),
        sa.Column("requested_by_sub", sa.Text, nullable=False),
        sa.Column("decided_at", TZ, nullable=True),
        sa.Column("decided_by_sub", sa.Text, nullable=True),
        sa.Column("decline_reason", sa.Text, nullable=True),
    )
    op.create_index("ix_case_transfers_case_id", "case_transfers", ["case_id"])
    # One pending transfer per case; lists by side and status.
    op.execute("CREATE UNIQUE INDEX uq_case_transfers_pending ON case_transfers (case_id) WHERE status = 'pending'")
    op.execute("CREATE INDEX ix_case_transfers_to ON case_transfers (to_municipality, status, requested_at, id)")
    op.execute("CREATE INDEX ix_case_transfers_from ON case_transfers (from_municipality, status, requested_at, id)")


def downgrade() -> None:
    op.drop_table("case_transfers")
