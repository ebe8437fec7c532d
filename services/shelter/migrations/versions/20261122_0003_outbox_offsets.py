"""outbox offsets: what the broker acknowledged, to notice a broker that lost it

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

from collections.abc import Sequence

from alembic import op

from shared.events import create_outbox_offsets_table

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    create_outbox_offsets_table(op)


def downgrade() -> None:
    op.drop_table("outbox_offsets")
