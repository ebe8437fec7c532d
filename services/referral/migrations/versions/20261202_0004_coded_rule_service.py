"""routing rules name a coded service

A routing rule's `service` travels in `referral.created` and in alerts, so it is now a code (a `needs`
value or a member kind, as on a manual referral). A stored rule whose service is not a code would make
`GET /v1/routing-rules` fail: its service is dropped (the referral then names no service, as the
default rules do).

Revision ID: 0004_rule_service
Revises: 0003_sealed
Create Date: 2026-12-02
"""

import json
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_rule_service"
down_revision: str | None = "0003_sealed"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The codes as of this migration (frozen here: a later change of the vocabulary must not change history).
CODES = frozenset({
    "shelter", "legal_aid", "health", "psychological", "economic_aid", "employment", "housing", "childcare",
    "protection_order", "police", "social_services", "child_protection", "education", "ngo", "prosecution",
    "court",
})


def upgrade() -> None:
    conn = op.get_bind()
    rows = conn.execute(sa.text("SELECT municipality, rules FROM routing_rules")).all()
    for municipality, rules in rows:
        stored = json.loads(rules) if isinstance(rules, str) else rules
        changed = False
        for rule in stored:
            if isinstance(rule, dict) and rule.get("service") is not None and rule["service"] not in CODES:
                rule["service"] = None
                changed = True
        if changed:
            conn.execute(
                sa.text("UPDATE routing_rules SET rules = CAST(:rules AS jsonb) WHERE municipality = :m"),
                {"rules": json.dumps(stored), "m": municipality},
            )


def downgrade() -> None:
    pass  # a dropped free-text service is not restored
