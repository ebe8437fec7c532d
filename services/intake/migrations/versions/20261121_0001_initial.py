"""initial: outbox, processed events, cases and their records, search index, audit trail

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


def upgrade() -> None:
    _create_event_tables()
    # Trigram index for case-number search (q); names are searched through keyed trigrams instead.
    op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    op.create_table(
        "case_counters",
        sa.Column("municipality", sa.Text, primary_key=True),
        sa.Column("year", sa.Integer, primary_key=True),
        sa.Column("last_seq", sa.Integer, nullable=False),
    )
    op.create_table(
        "cases",
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("municipality", sa.Text, nullable=False),
        sa.Column("case_number", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("risk_level", sa.Text, nullable=False),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("facts", postgresql.JSONB, nullable=False),
        sa.Column("personal", sa.Text, nullable=False),
        sa.Column("reported_at", TZ, nullable=False),
        sa.Column("reported_by_sub", sa.Text, nullable=False),
        sa.Column("reported_by_role", sa.Text, nullable=False),
        sa.Column("reported_by_member_id", sa.Text),
        sa.Column("closed_at", TZ),
        sa.Column("close_reason", sa.Text),
        sa.Column("created_at", TZ, nullable=False, server_default=sa.func.now()),
        # Unique per municipality: default prefixes can coincide (Maliq and Mallakastër are both MAL).
        sa.UniqueConstraint("municipality", "case_number", name="uq_cases_municipality_case_number"),
        sa.CheckConstraint("status IN ('open', 'closed')", name="status"),
        sa.CheckConstraint("risk_level IN ('low', 'medium', 'high')", name="risk_level"),
    )
    op.create_index(
        "ix_cases_municipality_page", "cases", ["municipality", sa.text("reported_at DESC"), sa.text("id DESC")]
    )
    op.execute("CREATE INDEX ix_cases_case_number_trgm ON cases USING gin (case_number gin_trgm_ops)")
    op.create_table(
        "survivor_index",
        sa.Column("case_id", sa.Uuid, sa.ForeignKey("cases.id"), primary_key=True),
        sa.Column("municipality", sa.Text, nullable=False),
        sa.Column("name_keys", postgresql.ARRAY(sa.Text), nullable=False),
        sa.Column("birth_year", sa.Integer),
        sa.Column("birth_date_key", sa.Text),
    )
    # Keys are HMACs scoped by municipality, so this one index is selective on its own.
    op.execute("CREATE INDEX ix_survivor_index_name_keys ON survivor_index USING gin (name_keys)")
    op.create_table(
        "risk_assessments",
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("case_id", sa.Uuid, sa.ForeignKey("cases.id"), nullable=False, index=True),
        sa.Column("answers", postgresql.JSONB, nullable=False),
        sa.Column("yes_count", sa.Integer, nullable=False),
        sa.Column("red_flags", postgresql.JSONB, nullable=False),
        sa.Column("computed_level", sa.Text, nullable=False),
        sa.Column("professional_judgement", sa.Text),
        sa.Column("risk_level", sa.Text, nullable=False),
        sa.Column("assessed_at", TZ, nullable=False),
        sa.Column("assessed_by_sub", sa.Text, nullable=False),
        sa.Column("assessed_by_role", sa.Text, nullable=False),
    )
    op.create_table(
        "protection_orders",
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("case_id", sa.Uuid, sa.ForeignKey("cases.id"), nullable=False, index=True),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("issued_at", TZ),
        sa.Column("expires_at", TZ),
        sa.Column("court", sa.Text),
        sa.Column("reference", sa.Text),
        sa.Column("recorded_at", TZ, nullable=False),
        sa.Column("recorded_by_sub", sa.Text, nullable=False),
        sa.Column("recorded_by_role", sa.Text, nullable=False),
        sa.CheckConstraint("expires_at IS NULL OR issued_at IS NULL OR expires_at > issued_at", name="dates"),
    )
    op.create_table(
        "consent_records",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("case_id", sa.Uuid, sa.ForeignKey("cases.id"), nullable=False, index=True),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("given", sa.Boolean, nullable=False),
        sa.Column("at", TZ, nullable=False),
        sa.Column("recorded_by_sub", sa.Text, nullable=False),
        sa.Column("recorded_by_role", sa.Text, nullable=False),
    )
    op.create_table(
        "case_access",
        sa.Column("case_id", sa.Uuid, primary_key=True),
        sa.Column("member_id", sa.Text, primary_key=True),
        sa.Column("referral_id", sa.Uuid),
        sa.Column("granted_at", TZ, nullable=False),
    )
    op.create_table(
        "idempotency_keys",
        sa.Column("municipality", sa.Text, primary_key=True),
        sa.Column("caller", sa.Text, primary_key=True),
        sa.Column("key", sa.Text, primary_key=True),
        sa.Column("request_hash", sa.Text, nullable=False),
        sa.Column("status_code", sa.Integer),
        sa.Column("response", postgresql.JSONB),
        sa.Column("created_at", TZ, nullable=False),
    )
    op.create_table(
        "risk_screen_configs",
        sa.Column("municipality", sa.Text, primary_key=True),
        sa.Column("questions", postgresql.JSONB, nullable=False),
        sa.Column("high_yes_count", sa.Integer, nullable=False),
        sa.Column("medium_yes_count", sa.Integer, nullable=False),
        sa.Column("updated_at", TZ, nullable=False),
        sa.Column("updated_by_sub", sa.Text, nullable=False),
    )
    op.create_table(
        "audit_log",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("at", TZ, nullable=False),
        sa.Column("case_id", sa.Uuid, nullable=False),
        sa.Column("municipality", sa.Text, nullable=False),
        sa.Column("sub", sa.Text, nullable=False),
        sa.Column("role", sa.Text, nullable=False),
        sa.Column("action", sa.Text, nullable=False),
    )
    op.create_index("ix_audit_log_case_id", "audit_log", ["case_id", "id"])
    op.execute(
        """
        CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN RAISE EXCEPTION 'audit_log is append-only'; END $$;
        """
    )
    op.execute(
        "CREATE TRIGGER audit_log_no_change BEFORE UPDATE OR DELETE ON audit_log "
        "FOR EACH ROW EXECUTE FUNCTION audit_log_append_only()"
    )
    op.execute(
        "CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log "
        "FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only()"
    )


def downgrade() -> None:
    op.execute("DROP TABLE audit_log")
    op.execute("DROP FUNCTION audit_log_append_only()")
    for table in (
        "risk_screen_configs",
        "idempotency_keys",
        "case_access",
        "consent_records",
        "protection_orders",
        "risk_assessments",
        "survivor_index",
        "cases",
        "case_counters",
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
