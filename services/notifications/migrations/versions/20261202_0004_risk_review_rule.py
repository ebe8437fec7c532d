"""alert rule: a reassessment that would have lowered a case's level alerts the coordinator to review it

Revision ID: 0003access
Revises: 0003
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

revision: str = "0003access"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Rules this migration adds, in the shape of the initial migration's SEED_RULES.
ADDED_RULES: list[tuple[str, str, str, str, str, list[str], dict[str, dict[str, list[str]]], int]] = [
    ("case.risk_review_requested", "case.risk_review", "role", "coordinator", "warning", ["inbox"], {}, 10),
]


def upgrade() -> None:
    rules = sa.table(
        "alert_rules",
        sa.column("event_type", sa.Text),
        sa.column("alert_type", sa.Text),
        sa.column("recipient_kind", sa.Text),
        sa.column("recipient_ref", sa.Text),
        sa.column("severity", sa.Text),
        sa.column("channels", ARRAY(sa.Text)),
        sa.column("condition", JSONB),
        sa.column("priority", sa.Integer),
        sa.column("enabled", sa.Boolean),
    )
    op.bulk_insert(
        rules,
        [
            {
                "event_type": e,
                "alert_type": a,
                "recipient_kind": k,
                "recipient_ref": r,
                "severity": s,
                "channels": c,
                "condition": cond,
                "priority": p,
                "enabled": True,
            }
            for e, a, k, r, s, c, cond, p in ADDED_RULES
        ],
    )


def downgrade() -> None:
    op.execute("DELETE FROM alert_rules WHERE event_type = 'case.risk_review_requested'")
