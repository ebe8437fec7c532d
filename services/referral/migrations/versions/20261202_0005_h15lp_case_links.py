"""case facts carry the coordinator's duplicate decisions (repeat, repeat_of, pending duplicates)

Revision ID: 0005_h15lp_links
Revises: 0004_rule_service
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_h15lp_links"
down_revision: str | None = "0004_rule_service"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("case_facts", sa.Column("repeat", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.add_column("case_facts", sa.Column("repeat_of", sa.Uuid(), nullable=True))
    op.add_column(
        "case_facts", sa.Column("pending_duplicates", sa.Integer(), nullable=False, server_default="0")
    )


def downgrade() -> None:
    op.drop_column("case_facts", "pending_duplicates")
    op.drop_column("case_facts", "repeat_of")
    op.drop_column("case_facts", "repeat")
