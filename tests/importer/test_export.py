"""`mkr export cases`: the register's CSV from referral, streamed, against the session's whole stack."""

from __future__ import annotations

import csv
import datetime as dt
import io

from mkr.importer import export_cases
from tests.support import Stack, contract_report, new_municipality, token, wait_for


async def test_export_streams_referral_register(stack: Stack) -> None:
    municipality = new_municipality()
    headers = stack.auth("coordinator", municipality)
    created = await stack.intake.post("/v1/cases", json=contract_report(municipality), headers=headers)
    assert created.status_code == 201, created.text
    number = created.json()["case_number"]
    today = dt.datetime.now(dt.UTC).date()
    jwt = token(stack.settings, "coordinator", municipality)

    async def exported() -> str | None:
        out = io.BytesIO()
        code = await export_cases(stack.referral, out, token=jwt, start=today - dt.timedelta(days=1), end=today)
        assert code == 0
        text = out.getvalue().decode()
        return text if number in text else None

    text = await wait_for(exported, timeout=20, what="the case in referral's register")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [r for r in rows if number in r.values()]
    assert "Hoxha" not in text and "Ermira" not in text  # the register is pseudonymous

    out = io.BytesIO()
    code = await export_cases(stack.referral, out, token="not-a-token", start=today, end=today)
    assert code == 2 and out.getvalue() == b""
