"""identity corrections: the history of PATCH /v1/cases/{id}/survivor

Who corrected which identity fields of a case's survivor, and when; the values before are sealed
under the case's own data key (`previous`), so erasing the case shreds them with the rest.

Revision ID: 0009_h17_corrections
Revises: 0008_h17_prune
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0009_h17_corrections"
down_revision: str | None = "0008_h17_prune"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "identity_corrections",
        sa.Column("id", sa.BigInteger(), sa.Identity(), primary_key=True),
        sa.Column("case_id", sa.Uuid(), sa.ForeignKey("cases.id"), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sub", sa.String(), nullable=False),
        sa.Column("role", sa.String(), nullable=False),
        sa.Column("fields", postgresql.JSONB(), nullable=False),
        sa.Column("previous", sa.String(), nullable=True),
    )
    op.create_index("ix_identity_corrections_case_id", "identity_corrections", ["case_id"])


def downgrade() -> None:
    op.drop_index("ix_identity_corrections_case_id", table_name="identity_corrections")
    op.drop_table("identity_corrections")
