"""h15t: pending transfers between municipalities, for the alert after `transfer_pending_hours`

Revision ID: 0006_h15t_transfers
Revises: 0003_police
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006_h15t_transfers"
down_revision: str | None = "0003_police"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "pending_transfers",
        sa.Column("transfer_id", sa.Text, primary_key=True),
        sa.Column("case_id", sa.Text, nullable=False),
        sa.Column("case_number", sa.Text, nullable=False),
        sa.Column("from_municipality", sa.Text, nullable=False),
        sa.Column("to_municipality", sa.Text, nullable=False),
        sa.Column("risk_level", sa.Text, nullable=True),
        sa.Column("requested_at", TZ, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("overdue_raised_at", TZ, nullable=True),
    )
    # The scan's question: pending, not yet raised, oldest first.
    op.execute(
        "CREATE INDEX ix_pending_transfers_due ON pending_transfers (requested_at) "
        "WHERE status = 'pending' AND overdue_raised_at IS NULL"
    )


def downgrade() -> None:
    op.drop_table("pending_transfers")
