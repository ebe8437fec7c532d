"""access that ends, audit that cannot lie

`referral_access`: one row per referral to an institution, with the referral's latest status as
intake learnt it (`referral.created`, `referral.status_changed`); a status only ever moves forward in
the referral life cycle, so a late `created` never re-grants what a `cancelled` ended. The old
`case_access` rows (grants without a status) move over as `pending`.

`audit_log` rows are chained: `seq` (gap-free, assigned under a transaction-level advisory lock) and
`hash` = sha256(previous row's hash + the row's canonical content), both set by a BEFORE INSERT
trigger, so every insert is chained whoever makes it. `case_id` may be empty: a 403 that names no case.

Revision ID: 0005access
Revises: 0004
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005access"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The canonical content of an audit row (services/intake/audit.py computes the same in Python):
# each field as "<length>:<text>", or "~" when empty; `at` as microseconds since the epoch.
CANONICAL = """
    CREATE OR REPLACE FUNCTION audit_log_canonical(r audit_log) RETURNS text LANGUAGE sql STABLE AS $$
        SELECT concat(
            length(r.seq::text), ':', r.seq::text,
            length(((extract(epoch FROM r.at) * 1000000)::bigint)::text), ':',
                ((extract(epoch FROM r.at) * 1000000)::bigint)::text,
            CASE WHEN r.case_id IS NULL THEN '~' ELSE length(r.case_id::text) || ':' || r.case_id::text END,
            length(r.municipality), ':', r.municipality,
            length(r.sub), ':', r.sub,
            length(r.role), ':', r.role,
            length(r.action), ':', r.action)
    $$
"""
GENESIS = "0" * 64


def upgrade() -> None:
    op.create_table(
        "referral_access",
        sa.Column("referral_id", sa.Uuid, primary_key=True),
        sa.Column("case_id", sa.Uuid, nullable=False),
        sa.Column("member_id", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("stage", sa.SmallInteger, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_referral_access_case_member", "referral_access", ["case_id", "member_id"])
    op.execute(
        "INSERT INTO referral_access (referral_id, case_id, member_id, status, stage, updated_at) "
        "SELECT referral_id, case_id, member_id, 'pending', 0, granted_at FROM case_access "
        "WHERE referral_id IS NOT NULL ON CONFLICT DO NOTHING"
    )
    op.drop_table("case_access")

    op.add_column("audit_log", sa.Column("seq", sa.BigInteger, nullable=True))
    op.add_column("audit_log", sa.Column("hash", sa.Text, nullable=True))
    op.alter_column("audit_log", "case_id", nullable=True)
    op.execute(CANONICAL)
    # Chain the rows already there, in id order (the append-only trigger is off only for this).
    op.execute("ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_change")
    op.execute(
        f"""
        DO $$
        DECLARE r audit_log; previous text := '{GENESIS}'; n bigint := 0;
        BEGIN
            FOR r IN SELECT * FROM audit_log ORDER BY id LOOP
                n := n + 1;
                r.seq := n;
                previous := encode(sha256(convert_to(previous || audit_log_canonical(r), 'UTF8')), 'hex');
                UPDATE audit_log SET seq = n, hash = previous WHERE id = r.id;
            END LOOP;
        END $$
        """
    )
    op.execute("ALTER TABLE audit_log ENABLE TRIGGER audit_log_no_change")
    op.alter_column("audit_log", "seq", nullable=False)
    op.alter_column("audit_log", "hash", nullable=False)
    op.create_index("ux_audit_log_seq", "audit_log", ["seq"], unique=True)
    op.execute(
        f"""
        CREATE FUNCTION audit_log_chain() RETURNS trigger LANGUAGE plpgsql AS $$
        DECLARE previous audit_log;
        BEGIN
            -- One chainer at a time until the transaction ends: concurrent inserts are chained in the
            -- order they take this lock, and `seq` is that order (ids are handed out before it).
            PERFORM pg_advisory_xact_lock(hashtext('mkr.intake.audit_chain'));
            SELECT * INTO previous FROM audit_log ORDER BY seq DESC LIMIT 1;
            NEW.seq := COALESCE(previous.seq, 0) + 1;
            NEW.hash := encode(
                sha256(convert_to(COALESCE(previous.hash, '{GENESIS}') || audit_log_canonical(NEW), 'UTF8')), 'hex'
            );
            RETURN NEW;
        END $$
        """
    )
    op.execute(
        "CREATE TRIGGER audit_log_chain BEFORE INSERT ON audit_log FOR EACH ROW EXECUTE FUNCTION audit_log_chain()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER audit_log_chain ON audit_log")
    op.execute("DROP FUNCTION audit_log_chain()")
    op.drop_index("ux_audit_log_seq", table_name="audit_log")
    op.execute("DROP FUNCTION audit_log_canonical(audit_log)")
    op.drop_column("audit_log", "hash")
    op.drop_column("audit_log", "seq")
    op.create_table(
        "case_access",
        sa.Column("case_id", sa.Uuid, primary_key=True),
        sa.Column("member_id", sa.Text, primary_key=True),
        sa.Column("referral_id", sa.Uuid, nullable=True),
        sa.Column("granted_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.execute(
        "INSERT INTO case_access (case_id, member_id, referral_id, granted_at) "
        "SELECT DISTINCT ON (case_id, member_id) case_id, member_id, referral_id, updated_at FROM referral_access "
        "WHERE status IN ('pending', 'acknowledged', 'accepted', 'completed')"
    )
    op.drop_table("referral_access")
