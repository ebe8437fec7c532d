"""idempotency keys in the shared shape: scoped by `scope`, created_at defaulted

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.alter_column("idempotency_keys", "municipality", new_column_name="scope")
    op.alter_column("idempotency_keys", "created_at", server_default=sa.func.now())


def downgrade() -> None:
    op.alter_column("idempotency_keys", "created_at", server_default=None)
    op.alter_column("idempotency_keys", "scope", new_column_name="municipality")
