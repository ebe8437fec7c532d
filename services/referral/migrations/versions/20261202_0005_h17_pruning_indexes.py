"""indexes for pruning (issue #17): published outbox rows, consumed-event ids

shared/pruning.py deletes old rows in small batches; these indexes let each batch find them without
scanning the table.

Revision ID: 0005_h17_prune
Revises: 0005_h15t_transfers
Create Date: 2026-12-02
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005_h17_prune"
down_revision: str | None = "0005_h15t_transfers"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("CREATE INDEX IF NOT EXISTS ix_outbox_published ON outbox (published_at) WHERE published_at IS NOT NULL")
    op.execute("CREATE INDEX IF NOT EXISTS ix_processed_events_at ON processed_events (processed_at)")


def downgrade() -> None:
    op.execute("DROP INDEX IF EXISTS ix_processed_events_at")
    op.execute("DROP INDEX IF EXISTS ix_outbox_published")
