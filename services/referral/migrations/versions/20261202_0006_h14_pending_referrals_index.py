"""pending referrals by acknowledgement deadline (the dashboard's overdue referrals)

The coordinator's dashboard counts the pending referrals whose acknowledgement deadline has passed and
lists the first of them by deadline. Without an index for it both were a sequential scan of all the
municipality's referrals (about 200 ms each with 100 000 referrals, `make bench` console_pages); a partial
index on the pending ones, by municipality and deadline, answers both from a short range.

Revision ID: 0006_h14_pending
Revises: 0005_h17_prune
Create Date: 2026-12-02
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006_h14_pending"
down_revision: str | None = "0005_h17_prune"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        "CREATE INDEX IF NOT EXISTS ix_referrals_pending_ack_due ON referrals (municipality, ack_due_at) "
        "WHERE status = 'pending'"
    )


def downgrade() -> None:
    op.execute("DROP INDEX IF EXISTS ix_referrals_pending_ack_due")
