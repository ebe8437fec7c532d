"""initial: outbox, processed events, directory, referrals, routing, meetings, plans, projections

Revision ID: 0001
Revises:
Create Date: 2026-11-21
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TZ = sa.DateTime(timezone=True)


def _jsonb(name: str) -> sa.Column:
    return sa.Column(name, postgresql.JSONB, nullable=False, server_default=sa.text("'[]'::jsonb"))


def upgrade() -> None:
    _create_event_tables()
    op.create_table(
        "members",
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("municipality", sa.Text, nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        _jsonb("services"),
        sa.Column("email", sa.Text),
        sa.Column("phone", sa.Text),
        sa.Column("active", sa.Boolean, nullable=False, server_default=sa.true()),
        sa.Column("created_at", TZ, nullable=False, server_default=sa.func.now()),
        sa.Column("updated_at", TZ, nullable=False, server_default=sa.func.now()),
    )
    op.create_index("ix_members_municipality_kind", "members", ["municipality", "kind", "created_at"])
    op.create_table(
        "routing_rules",
        sa.Column("municipality", sa.Text, primary_key=True),
        _jsonb("rules"),
        sa.Column("updated_at", TZ, nullable=False, server_default=sa.func.now()),
        sa.Column("updated_by", sa.Text, nullable=False),
    )
    op.create_table(
        "case_facts",
        sa.Column("case_id", sa.Uuid, primary_key=True),
        sa.Column("case_number", sa.Text, nullable=False),
        sa.Column("municipality", sa.Text, nullable=False),
        sa.Column("reported_at", TZ, nullable=False),
        sa.Column("status", sa.Text, nullable=False, server_default="open"),
        sa.Column("closed_at", TZ),
        sa.Column("risk_level", sa.Text, nullable=False, server_default="low"),
        sa.Column("source", sa.Text),
        sa.Column("sex", sa.Text),
        sa.Column("age_group", sa.Text),
        sa.Column("ethnicity", sa.Text),
        sa.Column("disability", sa.Boolean),
        _jsonb("violence_types"),
        sa.Column("perpetrator_relationship", sa.Text),
        _jsonb("needs"),
        sa.Column("children_count", sa.Integer, nullable=False, server_default="0"),
        _jsonb("consent_share_with"),
        sa.Column("reported_by_role", sa.Text),
        sa.Column("reported_by_member_id", sa.Text),
    )
    op.create_index("ix_case_facts_municipality_reported_at", "case_facts", ["municipality", "reported_at"])
    op.create_index("ix_case_facts_municipality_status_risk", "case_facts", ["municipality", "status", "risk_level"])
    op.create_table(
        "referrals",
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("case_id", sa.Uuid, nullable=False),
        sa.Column("case_number", sa.Text, nullable=False),
        sa.Column("municipality", sa.Text, nullable=False),
        sa.Column("to_member_id", sa.Uuid, nullable=False),
        sa.Column("to_member_kind", sa.Text, nullable=False),
        sa.Column("service", sa.Text),
        sa.Column("urgency", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("origin", sa.Text, nullable=False),
        sa.Column("note", sa.Text),
        sa.Column("consent_override_reason", sa.Text),
        sa.Column("legal_exception", sa.Text),
        sa.Column("decline_reason", sa.Text),
        sa.Column("outcome", sa.Text),
        sa.Column("sender_member_id", sa.Text),
        sa.Column("sender_role", sa.Text, nullable=False),
        sa.Column("created_by", sa.Text, nullable=False),
        sa.Column("created_at", TZ, nullable=False, server_default=sa.func.now()),
        sa.Column("updated_at", TZ, nullable=False, server_default=sa.func.now()),
        sa.Column("ack_due_at", TZ, nullable=False),
        sa.Column("acknowledged_at", TZ),
        sa.Column("sla_breached_at", TZ),
        _jsonb("history"),
    )
    op.create_index("ix_referrals_case_id", "referrals", ["case_id"])
    op.create_index("ix_referrals_municipality_created_at", "referrals", ["municipality", "created_at"])
    op.create_index("ix_referrals_to_member_id", "referrals", ["to_member_id"])
    op.create_index("ix_referrals_sender_member_id", "referrals", ["sender_member_id"])
    # Automatic routing never refers a case twice to one member for the same rule(s).
    op.execute(
        "CREATE UNIQUE INDEX uq_referrals_auto_case_member_reason ON referrals (case_id, to_member_id, reason) "
        "WHERE origin = 'auto'"
    )
    # What the deadline scheduler scans.
    op.execute(
        "CREATE INDEX ix_referrals_sla_due ON referrals (ack_due_at) "
        "WHERE status = 'pending' AND sla_breached_at IS NULL"
    )
    op.create_table(
        "routing_decisions",
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("case_id", sa.Uuid, nullable=False),
        sa.Column("municipality", sa.Text, nullable=False),
        sa.Column("trigger", sa.Text, nullable=False),
        sa.Column("event_id", sa.Uuid, nullable=False),
        sa.Column("risk_level", sa.Text, nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        _jsonb("rules"),
        sa.Column("urgency", sa.Text, nullable=False),
        sa.Column("outcome", sa.Text, nullable=False),
        sa.Column("member_id", sa.Uuid),
        sa.Column("referral_id", sa.Uuid),
        sa.Column("legal_exception", sa.Text),
        sa.Column("at", TZ, nullable=False, server_default=sa.func.now()),
    )
    op.create_index("ix_routing_decisions_case_id", "routing_decisions", ["case_id", "at"])
    op.create_table(
        "shelter_members",
        sa.Column("shelter_id", sa.Uuid, primary_key=True),
        sa.Column("member_id", sa.Uuid),
        sa.Column("municipality", sa.Text, nullable=False),
    )
    op.create_table(
        "protection_orders",
        sa.Column("order_id", sa.Uuid, primary_key=True),
        sa.Column("case_id", sa.Uuid, nullable=False),
        sa.Column("case_number", sa.Text, nullable=False),
        sa.Column("municipality", sa.Text, nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("issued_at", TZ),
        sa.Column("expires_at", TZ),
    )
    op.create_index("ix_protection_orders_municipality_expires_at", "protection_orders", ["municipality", "expires_at"])
    op.create_index("ix_protection_orders_municipality_issued_at", "protection_orders", ["municipality", "issued_at"])
    op.create_table(
        "placements",
        sa.Column("placement_id", sa.Uuid, primary_key=True),
        sa.Column("case_id", sa.Uuid, nullable=False),
        sa.Column("municipality", sa.Text, nullable=False),
        sa.Column("shelter_id", sa.Uuid),
        sa.Column("adults", sa.Integer, nullable=False, server_default="0"),
        sa.Column("children", sa.Integer, nullable=False, server_default="0"),
        sa.Column("started_at", TZ, nullable=False),
        sa.Column("ended_at", TZ),
    )
    op.create_index("ix_placements_municipality_started_at", "placements", ["municipality", "started_at"])
    op.create_table(
        "rent_bonuses",
        sa.Column("application_id", sa.Uuid, primary_key=True),
        sa.Column("case_id", sa.Uuid, nullable=False),
        sa.Column("municipality", sa.Text, nullable=False),
        sa.Column("approved", sa.Boolean, nullable=False),
        sa.Column("monthly_amount", sa.Numeric(14, 2), nullable=False, server_default="0"),
        sa.Column("start_month", sa.Date),
        sa.Column("months", sa.Integer, nullable=False, server_default="0"),
    )
    op.create_index("ix_rent_bonuses_municipality", "rent_bonuses", ["municipality"])
    op.create_table(
        "rent_bonus_payments",
        sa.Column("payment_id", sa.Uuid, primary_key=True),
        sa.Column("application_id", sa.Uuid, nullable=False),
        sa.Column("case_id", sa.Uuid, nullable=False),
        sa.Column("municipality", sa.Text, nullable=False),
        sa.Column("month", sa.Date, nullable=False),
        sa.Column("amount", sa.Numeric(14, 2), nullable=False),
        sa.Column("paid_at", TZ),
    )
    op.create_index("ix_rent_bonus_payments_municipality_month", "rent_bonus_payments", ["municipality", "month"])
    op.create_table(
        "etn_meetings",
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("municipality", sa.Text, nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("scheduled_for", TZ, nullable=False),
        _jsonb("case_ids"),
        _jsonb("member_ids"),
        _jsonb("attended_member_ids"),
        sa.Column("held", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("minutes_recorded_at", TZ),
        sa.Column("created_by", sa.Text, nullable=False),
        sa.Column("created_at", TZ, nullable=False, server_default=sa.func.now()),
    )
    op.create_index("ix_etn_meetings_municipality_scheduled_for", "etn_meetings", ["municipality", "scheduled_for"])
    op.create_table(
        "plan_actions",
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("meeting_id", sa.Uuid, nullable=False),
        sa.Column("case_id", sa.Uuid, nullable=False),
        sa.Column("case_number", sa.Text, nullable=False),
        sa.Column("municipality", sa.Text, nullable=False),
        sa.Column("action", sa.Text, nullable=False),
        sa.Column("responsible_member_id", sa.Uuid, nullable=False),
        sa.Column("due_date", sa.Date, nullable=False),
        sa.Column("status", sa.Text, nullable=False, server_default="open"),
        sa.Column("created_at", TZ, nullable=False, server_default=sa.func.now()),
        sa.Column("completed_at", TZ),
        sa.Column("completed_by", sa.Text),
        sa.Column("overdue_raised_at", TZ),
    )
    op.create_index("ix_plan_actions_case_id", "plan_actions", ["case_id"])
    op.execute(
        "CREATE INDEX ix_plan_actions_overdue_due ON plan_actions (due_date) "
        "WHERE status = 'open' AND overdue_raised_at IS NULL"
    )
    op.create_index("ix_plan_actions_municipality_due", "plan_actions", ["municipality", "status", "due_date"])


def downgrade() -> None:
    for table in (
        "plan_actions",
        "etn_meetings",
        "rent_bonus_payments",
        "rent_bonuses",
        "placements",
        "protection_orders",
        "shelter_members",
        "routing_decisions",
        "referrals",
        "case_facts",
        "routing_rules",
        "members",
        "processed_events",
        "outbox",
    ):
        op.drop_table(table)


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
