"""outbox offsets: what the broker acknowledged, to notice a broker that lost it

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from collections.abc import Sequence

from alembic import op

from shared.events import create_outbox_offsets_table

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    create_outbox_offsets_table(op)


def downgrade() -> None:
    op.drop_table("outbox_offsets")
