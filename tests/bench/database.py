"""Direct access to the launched stack's databases: the intake ceiling transaction and bulk loads.

The bench connects to the same embedded PostgreSQL the services use (found from the launcher's
MKR_STATE_DIR) and writes the same tables with the same indexes, built with the services' own
functions (keyed trigrams, field encryption), so HTTP figures can be compared with what the
database alone can do.
"""

from __future__ import annotations

import json
import os
import random
import re
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any
from unittest import mock

import asyncpg

from services.intake import casefile, casekeys, numbering, search_index
from services.intake import domain as intake_domain
from services.intake import service as intake_service
from services.intake.casefile import personal_context
from shared.crypto import FieldCipher, SearchIndexer
from shared.db import asyncpg_dsn, keystore_url, service_url
from shared.events import INTAKE_TOPIC, Envelope, make_event
from shared.settings import Settings
from tests.processes import LaunchedStack

FIRST_POOL = [
    "Ermira",
    "Drita",
    "Arta",
    "Blerina",
    "Elona",
    "Fatjona",
    "Gentiana",
    "Klodiana",
    "Lindita",
    "Mirela",
    "Anila",
    "Besa",
    "Dorina",
    "Entela",
    "Flutura",
    "Greta",
    "Ilda",
    "Jonida",
    "Kejsi",
    "Luljeta",
    "Majlinda",
    "Nertila",
    "Orjana",
    "Pranvera",
    "Rezarta",
    "Silvana",
    "Teuta",
    "Valbona",
    "Xhesika",
    "Zamira",
    "Alketa",
    "Brunilda",
    "Dafina",
    "Eriselda",
    "Fiona",
    "Gerta",
    "Irena",
    "Juliana",
    "Klea",
    "Marsela",
]
LAST_POOL = [
    "Hoxha",
    "Kola",
    "Shehu",
    "Leka",
    "Dervishi",
    "Gjoka",
    "Marku",
    "Prifti",
    "Rama",
    "Zeqiri",
    "Basha",
    "Cela",
    "Dushku",
    "Gjini",
    "Hysa",
    "Kapllani",
    "Lika",
    "Mema",
    "Nika",
    "Osmani",
    "Pasha",
    "Qose",
    "Rexha",
    "Sula",
    "Tafa",
    "Vata",
    "Xhafa",
    "Ymeri",
    "Zhupa",
    "Bici",
    "Duka",
    "Elezi",
    "Frasheri",
    "Gega",
    "Hasani",
    "Isufi",
    "Jahaj",
    "Kurti",
    "Lala",
    "Malaj",
    "Nezaj",
    "Omeri",
    "Palushi",
    "Qorri",
    "Ruci",
    "Selimi",
    "Tola",
    "Ujka",
    "Veliu",
    "Zyberi",
]
SHARE_WITH = ["police", "shelter", "social_services"]
RISK_ANSWERS = {"threats_to_kill": False, "strangulation": False}


def stack_settings(stack: LaunchedStack) -> Settings:
    """The settings the launched services see (their environment, not the bench's)."""
    with mock.patch.dict(os.environ, stack.env, clear=True):
        return Settings()


async def connect(stack: LaunchedStack, service: str) -> asyncpg.Connection:
    dsn = asyncpg_dsn(service_url(stack_settings(stack), service))
    return await asyncpg.connect(**dsn)  # type: ignore[arg-type]


async def pool(stack: LaunchedStack, service: str, size: int) -> asyncpg.Pool:
    dsn = asyncpg_dsn(service_url(stack_settings(stack), service))
    created = await asyncpg.create_pool(**dsn, min_size=size, max_size=size)  # type: ignore[arg-type]
    assert created is not None
    return created


# --- the intake ceiling: one report's transaction, issued directly --------------------------------------

DUPLICATE_PARAMS = [
    "keys", "n", "probe", "m", "exclude", "by", "bdk", "threshold", "limit",
    "everything", "viewer_sub", "viewer_member",
]


def positional(sql: str, names: list[str]) -> str:
    """A query of the service (`:name` parameters) in asyncpg's `$n` form, so the ceiling runs the same SQL."""
    for number, name in enumerate(names, start=1):
        sql = re.sub(rf"(?<!:):{name}\b", f"${number}", sql)
    return sql


# Intake's own duplicate search, positional: keys, n, probe keys, municipality, exclude, birth year, birth-date
# key, threshold, limit, and the viewer (coordinator?, sub, member id).
DUPLICATES_SQL = positional(intake_service.DUPLICATES_SQL, DUPLICATE_PARAMS)
SCREEN_SQL = (
    "SELECT municipality, questions, high_yes_count, medium_yes_count, updated_at, updated_by_sub "
    "FROM risk_screen_configs WHERE municipality = $1"
)
AUDIT_SQL = (
    "INSERT INTO audit_log (at, case_id, municipality, sub, role, action) "
    "VALUES ($1, $2, $3, $4, 'police', 'case.reported')"
)
STORE_PARAMS = [
    "case_id", "m", "case_number", "risk_level", "source", "facts", "personal", "reported_at", "sub", "role",
    "member_id", "created_at", "keys", "birth_year", "birth_date_key", "key_id", "assessment_id",
    "answers", "yes_count", "red_flags", "computed_level", "assessed", "consent_at", "share_with",
]
NUMBER_PARAMS = [
    "m", "year", "prefix", "case_id", "placeholder", "event_id", "topic", "key", "payload", "other_ids", "scores",
    "at", "sub", "role", "answer", "idem_scope", "idem_caller", "idem_key",
]
# The report's three statements as the service sends them (casefile.py, search_index.py, numbering.py).
STORE_SQL = positional(casefile.STORE_REPORT_SQL.text, STORE_PARAMS)
REPORT_DUPLICATES_SQL = positional(search_index.REPORT_DUPLICATES_SQL, DUPLICATE_PARAMS)
NUMBER_SQL = positional(numbering.NUMBER_CASE_SQL.text, NUMBER_PARAMS)


class CeilingReport:
    """Everything POST /v1/cases writes for the contract body, without HTTP, validation or the ORM."""

    def __init__(self, settings: Settings, municipality: str) -> None:
        self.settings = settings
        self.municipality = municipality
        self.cipher = FieldCipher.from_settings(settings)
        self.indexer = SearchIndexer.from_settings(settings)
        self.prefix = intake_domain.case_prefix(municipality, {})
        self.topic = settings.topic(INTAKE_TOPIC)

    async def report(self, conn: asyncpg.Connection, i: int) -> None:
        now = datetime.now(UTC)
        case_id = uuid.uuid4()
        first, last = FIRST_POOL[i % 40] + chr(97 + (i // 40) % 26), LAST_POOL[(i // 7) % 50]
        dob = date(1991, 4, 2)
        personal = {
            "first_name": first,
            "last_name": last,
            "date_of_birth": dob.isoformat(),
            "phone": "+355690000000",
            "address": "Rruga e Testit 1",
            "description": "invented",
        }
        facts = {
            "sex": "female",
            "age": 35,
            "age_group": "25-39",
            "ethnicity": "roma",
            "disability": False,
            "children": [{"sex": "male", "age": 7}],
            "occurred_at": "2026-11-20T21:30:00+01:00",
            "violence_types": ["physical", "psychological"],
            "perpetrator_relationship": "spouse",
            "needs": ["legal_aid", "shelter"],
            "consent_given_at": "2026-11-21T09:00:00+01:00",
        }
        keys = self.indexer.keyed(f"{first} {last}", self.municipality)
        birth_key = self.indexer.token(dob.isoformat(), self.municipality)
        case_cipher = casekeys.new_cipher(self.cipher)
        sealed = case_cipher.encrypt(json.dumps(personal), personal_context(case_id, "personal"))
        sub = "bench-ceiling"
        number = numbering.placeholder(case_id)
        async with conn.transaction():
            await conn.fetchrow(SCREEN_SQL, self.municipality)
            counts = await conn.fetch(
                STORE_SQL, case_id, self.municipality, number, "low", "police", json.dumps(facts), sealed, now, sub,
                "police", "bench-police", now, keys, dob.year, birth_key,
                self.indexer.key_id,
                uuid.uuid4(), json.dumps(RISK_ANSWERS), 0, "[]", "low", True, datetime(2026, 11, 21, 8, tzinfo=UTC),
                SHARE_WITH,
            )
            probe = intake_service.rarest(keys, {r["key"]: r["survivors"] for r in counts if r["key"]}, 0.45)
            found = await conn.fetch(
                REPORT_DUPLICATES_SQL, keys, len(keys), probe, self.municipality, case_id, dob.year, birth_key, 0.45,
                5, False, sub, "bench-police",
            )
            event = self.event(case_id, number, now, facts)
            # The service's last statement: counter, number, event, candidates and audit row (numbering.py).
            await conn.fetchrow(
                NUMBER_SQL, self.municipality, now.year, self.prefix, case_id, number, event.id, self.topic,
                str(case_id), event.model_dump_json(), [r["id"] for r in found if r["candidate"]],
                [round(float(r["score"]), 3) for r in found if r["candidate"]], now, sub, "police",
                None, None, None, None,  # no Idempotency-Key (as the HTTP run): no answer stored
            )

    def event(self, case_id: uuid.UUID, number: str, now: datetime, facts: dict[str, Any]) -> Envelope:
        return make_event(
            type_="case.reported",
            source="mkr/intake",
            subject=str(case_id),
            municipality=self.municipality,
            data={
                "case_id": str(case_id),
                "case_number": number,
                "source": "police",
                "reported_at": now.isoformat(),
                "risk_level": "low",
                "sex": "female",
                "age_group": "25-39",
                "ethnicity": "roma",
                "disability": False,
                "violence_types": facts["violence_types"],
                "perpetrator_relationship": "spouse",
                "needs": facts["needs"],
                "children_count": 1,
                "children_ages": [7],
                "consent_share_with": SHARE_WITH,
                "reported_by_role": "police",
                "reported_by_member_id": "bench-police",
            },
        )


# --- 100 000 survivors in one municipality -------------------------------------------------------------


def survivor_name(rng: random.Random) -> tuple[str, str]:
    return rng.choice(FIRST_POOL), rng.choice(LAST_POOL)


async def load_survivors(stack: LaunchedStack, municipality: str, count: int, seed: int = 7, *,
                         case_keys: bool = False) -> int:
    """COPY `count` cases with their search index into intake's tables; returns the seconds' worth of rows.
    `case_keys`: each case sealed under a data key of its own, its wrapped key COPY'd into the key store
    (as a report stores it); else under the master key (a case of before per-case keys)."""
    settings = stack_settings(stack)
    cipher = FieldCipher.from_settings(settings)
    indexer = SearchIndexer.from_settings(settings)
    rng = random.Random(seed)
    prefix = intake_domain.case_prefix(municipality, {})
    keyed: dict[str, list[str]] = {}
    start = datetime(2025, 1, 1, tzinfo=UTC)
    cases: list[tuple[Any, ...]] = []
    index: list[tuple[Any, ...]] = []
    wrapped: list[tuple[Any, ...]] = []
    for seq in range(1, count + 1):
        case_id = uuid.uuid4()
        sealer: Any = cipher
        if case_keys:
            sealer = casekeys.new_cipher(cipher)
            assert sealer.data_key is not None
            wrapped.append((case_id, casekeys.wrap(cipher, sealer.data_key, case_id), datetime.now(UTC)))
        first, last = survivor_name(rng)
        dob = date(rng.randint(1950, 2008), rng.randint(1, 12), rng.randint(1, 28))
        at = start + timedelta(seconds=seq * 300)
        personal = {
            "first_name": first,
            "last_name": last,
            "date_of_birth": dob.isoformat(),
            "phone": None,
            "address": None,
            "description": None,
        }
        facts = {
            "sex": "female",
            "age": 2025 - dob.year,
            "age_group": intake_domain.age_group(2025 - dob.year),
            "ethnicity": None,
            "disability": False,
            "children": [],
            "occurred_at": None,
            "violence_types": ["physical"],
            "perpetrator_relationship": "spouse",
            "needs": [],
            "consent_given_at": None,
        }
        cases.append(
            (
                case_id,
                municipality,
                intake_domain.format_case_number(prefix, 2025, seq),
                "open",
                "low",
                "police",
                json.dumps(facts),
                sealer.encrypt(json.dumps(personal), personal_context(case_id, "personal")),
                at,
                "bench-loader",
                "police",
                None,
                at,
            )
        )
        name = f"{first} {last}"
        if name not in keyed:
            keyed[name] = indexer.keyed(name, municipality)
        index.append((case_id, municipality, keyed[name], dob.year, indexer.token(dob.isoformat(), municipality)))
    if wrapped:  # the key first, as a report stores it
        keys = await asyncpg.connect(**asyncpg_dsn(keystore_url(settings)))  # type: ignore[arg-type]
        try:
            await keys.copy_records_to_table("case_keys", records=wrapped, columns=["case_id", "wrapped", "created_at"])
        finally:
            await keys.close()
    conn = await connect(stack, "intake")
    try:
        async with conn.transaction():
            await conn.copy_records_to_table(
                "cases",
                records=cases,
                columns=[
                    "id",
                    "municipality",
                    "case_number",
                    "status",
                    "risk_level",
                    "source",
                    "facts",
                    "personal",
                    "reported_at",
                    "reported_by_sub",
                    "reported_by_role",
                    "reported_by_member_id",
                    "created_at",
                ],
            )
            await conn.copy_records_to_table(
                "survivor_index",
                records=index,
                columns=["case_id", "municipality", "name_keys", "birth_year", "birth_date_key"],
            )
        await conn.execute("ANALYZE cases")
        await conn.execute("ANALYZE survivor_index")
    finally:
        await conn.close()
    return len(cases)


# --- 100 000 cases in referral's projection ---------------------------------------------------------------

SEXES = ["female"] * 8 + ["male", "other"]
AGE_GROUPS = ["0-11", "12-17", "18-24", "25-39", "25-39", "40-59", "40-59", "60+", "unknown"]
ETHNICITIES = [None, None, None, "roma", "egyptian", "albanian", "albanian"]
VIOLENCE = ["physical", "psychological", "sexual", "economic"]
SOURCES = ["police", "police", "health", "social_services", "self", "ngo"]
KINDS = ["social_services", "police", "shelter", "health", "legal_aid", "child_protection"]
STATUSES = ["pending", "acknowledged", "accepted", "completed", "completed", "declined"]


async def load_case_facts(
    stack: LaunchedStack, municipality: str, count: int, seed: int = 11,
    cases: list[tuple[uuid.UUID, str, datetime, str]] | None = None,
) -> tuple[int, int]:
    """COPY `count` projected cases (and one referral each) of 2026 into referral's tables; with `cases`
    (id, case number, reported at, risk level; all open), the projection of those intake cases, so both
    services agree on every case."""
    rng = random.Random(seed)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    span = (datetime(2026, 11, 20, tzinfo=UTC) - start).total_seconds()
    members = {kind: uuid.uuid4() for kind in KINDS}
    facts: list[tuple[Any, ...]] = []
    referrals: list[tuple[Any, ...]] = []
    for seq in range(1, count + 1):
        case_id, number = uuid.uuid4(), f"SUM-2026-{seq:06d}"
        at = start + timedelta(seconds=span * seq / count)
        closed = rng.random() < 0.15
        risk = rng.choice(["low", "low", "medium", "high"])
        if cases:
            case_id, number, at, risk = cases[seq - 1]
            closed = False
        violence = sorted(set(rng.sample(VIOLENCE, rng.randint(1, 3))))
        children = rng.choice([0, 0, 0, 1, 2, 3])
        facts.append(
            (
                case_id,
                number,
                municipality,
                at,
                "closed" if closed else "open",
                at + timedelta(days=30) if closed else None,
                risk,
                rng.choice(SOURCES),
                rng.choice(SEXES),
                rng.choice(AGE_GROUPS),
                rng.choice(ETHNICITIES),
                rng.random() < 0.05,
                json.dumps(violence),
                "spouse",
                json.dumps(["shelter"]),
                children,
                json.dumps(["police", "social_services"]),
                "police",
                None,
                municipality,
            )
        )
        kind = rng.choice(KINDS)
        status = rng.choice(STATUSES)
        created = at + timedelta(minutes=5)
        acknowledged = created + timedelta(hours=rng.uniform(0.5, 72)) if status != "pending" else None
        referrals.append(
            (
                uuid.uuid4(),
                case_id,
                number,
                municipality,
                members[kind],
                kind,
                None,
                {"high": "emergency", "medium": "high"}.get(risk, "normal"),
                status,
                "routing rule",
                "auto",
                "coordinator",
                "bench-loader",
                created,
                created,
                created + timedelta(hours=24),
                acknowledged,
                created + timedelta(hours=24) if rng.random() < 0.1 else None,
                "[]",
            )
        )
    conn = await connect(stack, "referral")
    try:
        async with conn.transaction():
            await conn.copy_records_to_table(
                "case_facts",
                records=facts,
                columns=[
                    "case_id",
                    "case_number",
                    "municipality",
                    "reported_at",
                    "status",
                    "closed_at",
                    "risk_level",
                    "source",
                    "sex",
                    "age_group",
                    "ethnicity",
                    "disability",
                    "violence_types",
                    "perpetrator_relationship",
                    "needs",
                    "children_count",
                    "consent_share_with",
                    "reported_by_role",
                    "reported_by_member_id",
                    "reported_municipality",
                ],
            )
            await conn.copy_records_to_table(
                "referrals",
                records=referrals,
                columns=[
                    "id",
                    "case_id",
                    "case_number",
                    "municipality",
                    "to_member_id",
                    "to_member_kind",
                    "service",
                    "urgency",
                    "status",
                    "reason",
                    "origin",
                    "sender_role",
                    "created_by",
                    "created_at",
                    "updated_at",
                    "ack_due_at",
                    "acknowledged_at",
                    "sla_breached_at",
                    "history",
                ],
            )
        await conn.execute("ANALYZE case_facts")
        await conn.execute("ANALYZE referrals")
    finally:
        await conn.close()
    return len(facts), len(referrals)


# --- 100 000 cases in one municipality, in intake and in referral's projection alike --------------------


async def load_municipality(stack: LaunchedStack, municipality: str, count: int) -> list[tuple[uuid.UUID, str]]:
    """Intake's cases and search index (`load_survivors`), then referral's projection of the very same cases
    with one referral each (`load_case_facts`), as the consumers would have built it; returns (id, number)."""
    await load_survivors(stack, municipality, count)
    conn = await connect(stack, "intake")
    try:
        # Risk levels as a register has them (load_survivors makes every case low), the same in both services.
        await conn.execute(
            "UPDATE cases SET risk_level = (ARRAY['low', 'low', 'medium', 'high'])[1 + (hashtext(id::text) & 3)] "
            "WHERE municipality = $1", municipality)
        await conn.execute("ANALYZE cases")
        rows = await conn.fetch("SELECT id, case_number, reported_at, risk_level FROM cases WHERE municipality = $1 "
                                "ORDER BY case_number", municipality)
    finally:
        await conn.close()
    cases = [(row["id"], row["case_number"], row["reported_at"], row["risk_level"]) for row in rows]
    await load_case_facts(stack, municipality, len(cases), cases=cases)
    return [(case_id, number) for case_id, number, _, _ in cases]
