"""initial: outbox, processed events, alert rules, alerts, projections, webhooks, deliveries

Revision ID: 0001
Revises:
Create Date: 2026-11-21
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The default rules as they stood when this migration was written (later changes: new migrations).
SEED_RULES: list[tuple[str, str, str, str, str, list[str], dict[str, dict[str, list[str]]], int]] = [
    (
        "case.reported",
        "case.high_risk",
        "role",
        "coordinator",
        "critical",
        ["inbox"],
        {"risk_level": {"in": ["high"]}},
        10,
    ),
    ("case.reported", "case.new", "role", "coordinator", "info", ["inbox"], {"risk_level": {"not_in": ["high"]}}, 20),
    (
        "case.risk_assessed",
        "case.high_risk",
        "role",
        "coordinator",
        "critical",
        ["inbox"],
        {"risk_level": {"in": ["high"]}, "previous_risk_level": {"not_in": ["high"]}},
        10,
    ),
    (
        "referral.created",
        "referral.new",
        "member",
        "to_member_id",
        "critical",
        ["inbox", "email"],
        {"urgency": {"in": ["emergency"]}},
        10,
    ),
    (
        "referral.created",
        "referral.new",
        "member",
        "to_member_id",
        "info",
        ["inbox", "email"],
        {"urgency": {"not_in": ["emergency"]}},
        20,
    ),
    ("referral.sla_breached", "referral.sla_breached", "role", "coordinator", "critical", ["inbox"], {}, 10),
    (
        "referral.sla_breached",
        "referral.sla_breached",
        "member",
        "to_member_id",
        "critical",
        ["inbox", "email"],
        {},
        10,
    ),
    (
        "case.protection_order_expiring",
        "protection_order.expiring",
        "role",
        "coordinator",
        "warning",
        ["inbox"],
        {},
        10,
    ),
    ("case.protection_order_expiring", "protection_order.expiring", "role", "police", "warning", ["inbox"], {}, 10),
    ("plan.action_overdue", "plan.action_overdue", "role", "coordinator", "warning", ["inbox"], {}, 10),
    (
        "plan.action_overdue",
        "plan.action_overdue",
        "member",
        "responsible_member_id",
        "warning",
        ["inbox", "email"],
        {},
        10,
    ),
    ("shelter.full", "shelter.full", "role", "coordinator", "warning", ["inbox"], {}, 10),
    ("shelter.none_available", "shelter.none_available", "role", "coordinator", "critical", ["inbox"], {}, 10),
    ("rent_bonus.ending", "rent_bonus.ending", "role", "housing_officer", "info", ["inbox"], {}, 10),
    ("rent_bonus.ending", "rent_bonus.ending", "role", "coordinator", "info", ["inbox"], {}, 10),
    ("rent_bonus.payment_due", "rent_bonus.payment_due", "role", "housing_officer", "warning", ["inbox"], {}, 10),
    ("rent_bonus.payment_due", "rent_bonus.payment_due", "role", "coordinator", "warning", ["inbox"], {}, 10),
    ("mechanism.gap", "mechanism.gap", "role", "coordinator", "warning", ["inbox"], {}, 10),
    ("notification.failed", "notification.failed", "role", "coordinator", "warning", ["inbox"], {}, 10),
]


def _tz() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    _create_event_tables()
    rules = op.create_table(
        "alert_rules",
        sa.Column("id", sa.Integer, sa.Identity(), primary_key=True),
        sa.Column("event_type", sa.Text, nullable=False, index=True),
        sa.Column("alert_type", sa.Text, nullable=False),
        sa.Column("recipient_kind", sa.Text, nullable=False),
        sa.Column("recipient_ref", sa.Text, nullable=False),
        sa.Column("severity", sa.Text, nullable=False),
        sa.Column("channels", ARRAY(sa.Text), nullable=False),
        sa.Column("condition", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column("priority", sa.Integer, nullable=False, server_default="100"),
        sa.Column("enabled", sa.Boolean, nullable=False, server_default=sa.true()),
        sa.CheckConstraint("recipient_kind IN ('role', 'member', 'shelter', 'user')", name="recipient_kind"),
        sa.CheckConstraint("severity IN ('info', 'warning', 'critical')", name="severity"),
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
            for e, a, k, r, s, c, cond, p in SEED_RULES
        ],
    )

    op.execute("CREATE SEQUENCE alerts_seq")
    op.create_table(
        "alerts",
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("seq", sa.BigInteger, nullable=False, unique=True, server_default=sa.text("nextval('alerts_seq')")),
        sa.Column("event_id", sa.Uuid, nullable=False),
        sa.Column("event_type", sa.Text, nullable=False),
        sa.Column("type", sa.Text, nullable=False),
        sa.Column("severity", sa.Text, nullable=False),
        sa.Column("municipality", sa.Text, nullable=False),
        sa.Column("recipient_key", sa.Text, nullable=False),
        sa.Column("role", sa.Text),
        sa.Column("member_id", sa.Text),
        sa.Column("shelter_id", sa.Text),
        sa.Column("sub", sa.Text),
        sa.Column("case_id", sa.Uuid),
        sa.Column("params", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column("created_at", _tz(), nullable=False, server_default=sa.func.now()),
        sa.Column("read_at", _tz()),
        sa.UniqueConstraint("event_id", "type", "recipient_key", name="uq_alerts_event_recipient"),
    )
    op.execute("ALTER SEQUENCE alerts_seq OWNED BY alerts.seq")
    op.execute("CREATE INDEX ix_alerts_role ON alerts (municipality, role, seq DESC) WHERE role IS NOT NULL")
    op.execute("CREATE INDEX ix_alerts_member ON alerts (member_id, seq DESC) WHERE member_id IS NOT NULL")
    op.execute("CREATE INDEX ix_alerts_shelter ON alerts (shelter_id, seq DESC) WHERE shelter_id IS NOT NULL")
    op.execute("CREATE INDEX ix_alerts_sub ON alerts (sub, seq DESC) WHERE sub IS NOT NULL")
    op.execute(
        """
        CREATE FUNCTION alerts_notify() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN PERFORM pg_notify('mkr_alerts', ''); RETURN NULL; END $$;
        """
    )
    op.execute(
        "CREATE TRIGGER alerts_notify AFTER INSERT ON alerts FOR EACH STATEMENT EXECUTE FUNCTION alerts_notify()"
    )

    op.create_table(
        "member_contacts",
        sa.Column("member_id", sa.Text, primary_key=True),
        sa.Column("municipality", sa.Text, nullable=False),
        sa.Column("kind", sa.Text),
        sa.Column("email", sa.Text),
        sa.Column("updated_at", _tz(), nullable=False, server_default=sa.func.now()),
    )
    op.create_table(
        "shelter_free_beds",
        sa.Column("shelter_id", sa.Text, primary_key=True),
        sa.Column("municipality", sa.Text, nullable=False, index=True),
        sa.Column("member_id", sa.Text, index=True),
        sa.Column("free_beds", sa.Integer, nullable=False, server_default="0"),
        sa.Column("updated_at", _tz(), nullable=False, server_default=sa.func.now()),
    )
    op.create_table(
        "municipality_bed_alerts",
        sa.Column("municipality", sa.Text, primary_key=True),
        sa.Column("none_free_since", _tz()),
        sa.Column("episode", sa.Integer, nullable=False, server_default="0"),
    )
    op.create_table(
        "expiring_orders",
        sa.Column("order_id", sa.Text, primary_key=True),
        sa.Column("case_id", sa.Text, nullable=False),
        sa.Column("case_number", sa.Text),
        sa.Column("municipality", sa.Text, nullable=False),
        sa.Column("kind", sa.Text),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("expires_at", _tz()),
        sa.Column("expiry_raised_at", _tz()),
    )
    op.execute(
        "CREATE INDEX ix_expiring_orders_due ON expiring_orders (expires_at) "
        "WHERE status = 'issued' AND expiry_raised_at IS NULL"
    )
    op.create_table(
        "subscriptions",
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("municipality", sa.Text, nullable=False, index=True),
        sa.Column("owner_role", sa.Text, nullable=False),
        sa.Column("owner_member_id", sa.Text),
        sa.Column("owner_sub", sa.Text, nullable=False),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("event_types", ARRAY(sa.Text), nullable=False),
        sa.Column("secret", sa.Text, nullable=False),
        sa.Column("created_at", _tz(), nullable=False, server_default=sa.func.now()),
        sa.Column("deleted_at", _tz()),
    )
    op.execute("CREATE SEQUENCE deliveries_seq")
    op.create_table(
        "deliveries",
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column(
            "seq", sa.BigInteger, nullable=False, unique=True, server_default=sa.text("nextval('deliveries_seq')")
        ),
        sa.Column("dedupe_key", sa.Text, nullable=False, unique=True),
        sa.Column("channel", sa.Text, nullable=False),
        sa.Column("subscription_id", sa.Uuid, sa.ForeignKey("subscriptions.id"), index=True),
        sa.Column("alert_id", sa.Uuid, sa.ForeignKey("alerts.id")),
        sa.Column("address", sa.Text),
        sa.Column("event_id", sa.Uuid, nullable=False),
        sa.Column("event_type", sa.Text, nullable=False),
        sa.Column("municipality", sa.Text, nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("state", sa.Text, nullable=False, server_default="pending"),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_attempt_at", _tz(), nullable=False, server_default=sa.func.now()),
        sa.Column("last_attempt_at", _tz()),
        sa.Column("last_status_code", sa.Integer),
        sa.Column("last_error", sa.Text),
        sa.Column("history", JSONB, nullable=False, server_default=sa.text("'[]'::jsonb")),
        sa.Column("created_at", _tz(), nullable=False, server_default=sa.func.now()),
        sa.Column("delivered_at", _tz()),
        sa.CheckConstraint("state IN ('pending', 'succeeded', 'dead', 'cancelled')", name="state"),
        sa.CheckConstraint("channel IN ('webhook', 'email')", name="channel"),
    )
    op.execute("ALTER SEQUENCE deliveries_seq OWNED BY deliveries.seq")
    op.execute("CREATE INDEX ix_deliveries_due ON deliveries (next_attempt_at) WHERE state = 'pending'")
    op.execute(
        """
        CREATE FUNCTION deliveries_notify() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN PERFORM pg_notify('mkr_deliveries', ''); RETURN NULL; END $$;
        """
    )
    op.execute(
        "CREATE TRIGGER deliveries_notify AFTER INSERT ON deliveries FOR EACH STATEMENT "
        "EXECUTE FUNCTION deliveries_notify()"
    )


def downgrade() -> None:
    for table in (
        "deliveries",
        "subscriptions",
        "expiring_orders",
        "municipality_bed_alerts",
        "shelter_free_beds",
        "member_contacts",
        "alerts",
        "alert_rules",
        "processed_events",
        "outbox",
    ):
        op.drop_table(table)
    op.execute("DROP FUNCTION IF EXISTS deliveries_notify()")
    op.execute("DROP FUNCTION IF EXISTS alerts_notify()")
    op.execute("DROP FUNCTION IF EXISTS outbox_notify()")


def _create_event_tables() -> None:
    """The outbox, its NOTIFY trigger and the inbox, as `shared.events.create_event_tables` made them on
    2026-11-21 (inlined so that a change to the live helper never changes this history)."""
    op.create_table(
        "outbox",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("event_id", sa.Uuid, nullable=False, unique=True),
        sa.Column("topic", sa.Text, nullable=False),
        sa.Column("key", sa.Text, nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("published_at", sa.DateTime(timezone=True)),
    )
    op.execute("CREATE INDEX ix_outbox_unpublished ON outbox (id) WHERE published_at IS NULL")
    op.execute(
        """
        CREATE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN PERFORM pg_notify('mkr_outbox', ''); RETURN NULL; END $$;
        """
    )
    op.execute(
        "CREATE TRIGGER outbox_notify AFTER INSERT ON outbox FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify()"
    )
    op.create_table(
        "processed_events",
        sa.Column("consumer", sa.Text, primary_key=True),
        sa.Column("event_id", sa.Uuid, primary_key=True),
        sa.Column("event_type", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False, server_default="done"),
        sa.Column("processed_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    )
