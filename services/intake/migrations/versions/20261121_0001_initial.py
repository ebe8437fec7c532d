"""initial: outbox, processed events, cases

Revision ID: 0001
Revises:
Create Date: 2026-11-21
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from shared.events import create_event_tables

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    create_event_tables(op)
    op.create_table(
        "case_counters",
        sa.Column("municipality", sa.Text, primary_key=True),
        sa.Column("year", sa.Integer, primary_key=True),
        sa.Column("last_seq", sa.Integer, nullable=False),
    )
    op.create_table(
        "cases",
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("municipality", sa.Text, nullable=False, index=True),
        sa.Column("case_number", sa.Text, nullable=False, unique=True),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("risk_level", sa.Text, nullable=False),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("facts", postgresql.JSONB, nullable=False),
        sa.Column("reported_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reported_by_sub", sa.Text, nullable=False),
        sa.Column("reported_by_role", sa.Text, nullable=False),
        sa.Column("reported_by_member_id", sa.Text),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    )


def downgrade() -> None:
    op.drop_table("cases")
    op.drop_table("case_counters")
    op.drop_table("processed_events")
    op.drop_table("outbox")
