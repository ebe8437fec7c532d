"""the coordinator's duplicate decisions: candidates found at report time, links, escalation settings

Revision ID: 0007_h15lp_links
Revises: 0009_h17_corrections
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007_h15lp_links"
down_revision: str | None = "0009_h17_corrections"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.add_column(
        "risk_screen_configs", sa.Column("escalation_cases", sa.Integer(), nullable=False, server_default="3")
    )
    op.add_column(
        "risk_screen_configs",
        sa.Column("escalation_window_days", sa.Integer(), nullable=False, server_default="365"),
    )
    op.create_table(
        "duplicate_candidates",
        sa.Column("case_id", sa.Uuid, sa.ForeignKey("cases.id"), primary_key=True),
        sa.Column("other_id", sa.Uuid, sa.ForeignKey("cases.id"), primary_key=True, index=True),
        sa.Column("municipality", sa.String(), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("found_at", TZ, nullable=False),
    )
    op.create_table(
        "case_links",
        sa.Column("low_id", sa.Uuid, sa.ForeignKey("cases.id"), primary_key=True),
        sa.Column("high_id", sa.Uuid, sa.ForeignKey("cases.id"), primary_key=True, index=True),
        sa.Column("municipality", sa.String(), nullable=False),
        sa.Column("relation", sa.String(), nullable=False),
        sa.Column("decided_at", TZ, nullable=False),
        sa.Column("decided_by_sub", sa.String(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("case_links")
    op.drop_table("duplicate_candidates")
    op.drop_column("risk_screen_configs", "escalation_window_days")
    op.drop_column("risk_screen_configs", "escalation_cases")
