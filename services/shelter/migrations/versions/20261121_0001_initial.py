"""initial: outbox, processed events, shelters, placements, case projection, rent bonus

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
MONEY = sa.Numeric(14, 2)


def upgrade() -> None:
    _create_event_tables()
    op.create_table(
        "shelters",
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("municipality", sa.Text, nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("operator", sa.Text, nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("capacity", sa.Integer, nullable=False),
        sa.Column("free_beds", sa.Integer, nullable=False),
        sa.Column("accepts_children", sa.Boolean, nullable=False),
        sa.Column("address", sa.Text, nullable=False),
        sa.Column("phone", sa.Text, nullable=False),
        sa.Column("member_id", sa.Text),
        sa.Column("version", sa.Integer, nullable=False, server_default="1"),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("updated_at", TZ, nullable=False),
        # The database itself refuses overbooking, whatever the code does.
        sa.CheckConstraint("free_beds >= 0 AND free_beds <= capacity", name="ck_shelters_free_beds_range"),
        sa.CheckConstraint("capacity > 0", name="ck_shelters_capacity_positive"),
        sa.CheckConstraint(
            "kind IN ('emergency', 'national_centre', 'crisis_centre', 'transit')", name="ck_shelters_kind"
        ),
    )
    op.create_index("ix_shelters_municipality", "shelters", ["municipality"])
    op.create_table(
        "placements",
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("municipality", sa.Text, nullable=False),
        sa.Column("shelter_id", sa.Uuid, sa.ForeignKey("shelters.id"), nullable=False),
        sa.Column("case_id", sa.Uuid, nullable=False),
        sa.Column("adults", sa.Integer, nullable=False),
        sa.Column("children", sa.Integer, nullable=False),
        sa.Column("planned_until", sa.Date, nullable=False),
        sa.Column("started_at", TZ, nullable=False),
        sa.Column("ended_at", TZ),
        sa.Column("end_reason", sa.Text),
        sa.Column("created_by_sub", sa.Text, nullable=False),
        sa.CheckConstraint("adults >= 0 AND children >= 0 AND adults + children > 0", name="ck_placements_beds"),
    )
    op.create_index("ix_placements_municipality", "placements", ["municipality"])
    op.create_index("ix_placements_shelter_id", "placements", ["shelter_id"])
    op.create_index("ix_placements_case_id", "placements", ["case_id"])
    op.create_table(
        "case_projection",
        sa.Column("case_id", sa.Uuid, primary_key=True),
        sa.Column("case_number", sa.Text, nullable=False),
        sa.Column("municipality", sa.Text, nullable=False),
        sa.Column("needs", postgresql.JSONB, nullable=False, server_default="[]"),
        sa.Column("children_count", sa.Integer),
    )
    op.create_table(
        "rent_bonus_applications",
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("municipality", sa.Text, nullable=False),
        sa.Column("case_id", sa.Uuid, nullable=False),
        sa.Column("monthly_rent", MONEY, nullable=False),
        sa.Column("household_size", sa.Integer, nullable=False),
        sa.Column("requested_months", sa.Integer, nullable=False),
        sa.Column("status", sa.Text, nullable=False, server_default="pending"),
        sa.Column("submitted_by_role", sa.Text, nullable=False),
        sa.Column("submitted_by_sub", sa.Text, nullable=False),
        sa.Column("submitted_by_member_id", sa.Text),
        sa.Column("submitted_at", TZ, nullable=False),
        sa.Column("decided_at", TZ),
        sa.Column("decided_by_sub", sa.Text),
        sa.Column("monthly_amount", MONEY),
        sa.Column("start_month", sa.Date),
        sa.Column("months", sa.Integer),
        sa.Column("last_month", sa.Date),
        sa.Column("decision_reason", sa.Text),
        sa.Column("ending_raised_at", TZ),
        sa.CheckConstraint("monthly_rent > 0", name="ck_rent_bonus_applications_rent_positive"),
        sa.CheckConstraint("status IN ('pending', 'approved', 'rejected')", name="ck_rent_bonus_applications_status"),
    )
    op.create_index("ix_rent_bonus_applications_municipality", "rent_bonus_applications", ["municipality"])
    op.create_index("ix_rent_bonus_applications_case_id", "rent_bonus_applications", ["case_id"])
    op.execute(
        "CREATE INDEX ix_rent_bonus_applications_ending ON rent_bonus_applications (last_month) "
        "WHERE status = 'approved' AND ending_raised_at IS NULL"
    )
    op.create_table(
        "rent_bonus_payments",
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("application_id", sa.Uuid, sa.ForeignKey("rent_bonus_applications.id"), nullable=False),
        sa.Column("municipality", sa.Text, nullable=False),
        sa.Column("month", sa.Date, nullable=False),
        sa.Column("amount", MONEY, nullable=False),
        sa.Column("status", sa.Text, nullable=False, server_default="due"),
        sa.Column("paid_at", TZ),
        sa.Column("paid_by_sub", sa.Text),
        sa.Column("due_raised_at", TZ),
        sa.UniqueConstraint("application_id", "month", name="uq_rent_bonus_payments_application_month"),
        sa.CheckConstraint("amount > 0", name="ck_rent_bonus_payments_amount_positive"),
        sa.CheckConstraint("status IN ('due', 'paid')", name="ck_rent_bonus_payments_status"),
    )
    op.create_index("ix_rent_bonus_payments_application_id", "rent_bonus_payments", ["application_id"])
    op.create_index("ix_rent_bonus_payments_municipality_month", "rent_bonus_payments", ["municipality", "month"])
    op.execute(
        "CREATE INDEX ix_rent_bonus_payments_due ON rent_bonus_payments (month) "
        "WHERE status = 'due' AND due_raised_at IS NULL"
    )
    op.create_table(
        "rent_bonus_budgets",
        sa.Column("municipality", sa.Text, primary_key=True),
        sa.Column("year", sa.Integer, primary_key=True),
        sa.Column("amount", MONEY, nullable=False),
        sa.Column("updated_at", TZ, nullable=False),
        sa.CheckConstraint("amount > 0", name="ck_rent_bonus_budgets_amount_positive"),
    )


def downgrade() -> None:
    for table in (
        "rent_bonus_budgets",
        "rent_bonus_payments",
        "rent_bonus_applications",
        "case_projection",
        "placements",
        "shelters",
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
