"""`mkr import cases` against the real intake service: a 1,000-row file with bad rows in it."""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import re
import uuid
from pathlib import Path
from typing import Any

import pytest

from mkr import importer
from mkr.importer import UsageError, import_file, load_mapping
from tests.importer.records import write_file
from tests.support import Stack, new_municipality, token

ROOT = Path(__file__).resolve().parents[2]

async def count_cases(stack: Stack, municipality: str) -> list[str]:
    """Every case number of the municipality, page by page (as the coordinator)."""
    headers = stack.auth("coordinator", municipality)
    numbers: list[str] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 200}
        if cursor:
            params["cursor"] = cursor
        response = await stack.intake.get("/v1/cases", params=params, headers=headers)
        assert response.status_code == 200, response.text
        page = response.json()
        numbers += [item["case_number"] for item in page["items"]]
        cursor = page.get("next_cursor")
        if not cursor:
            return numbers


@pytest.fixture
def coordinator(intake: Stack) -> tuple[str, str]:
    municipality = new_municipality()
    return municipality, token(intake.settings, "coordinator", municipality, sub=f"import-{uuid.uuid4().hex[:6]}")


@pytest.mark.timeout(900)
async def test_thousand_rows_dry_run_interrupted_resumed_and_rerun(
    intake: Stack, coordinator: tuple[str, str], tmp_path: Path
) -> None:
    """One file of 1,000 rows, 50 of them bad: the dry run names them; a run stopped after 150 rows, a run
    killed mid-flight and a resumed run together import every good row once; a re-run creates nothing."""
    municipality, jwt = coordinator
    path = tmp_path / "records.csv"
    faults = write_file(path)
    good = 1000 - len(faults)
    assert len(faults) == 50

    dry = await import_file(path, client=intake.intake, token=jwt, dry_run=True, refused_path=tmp_path / "dry.csv")
    assert dry.rows == 1000
    assert {e.line: e.column for e in dry.refused} == faults
    assert dry.refused_lines == set(faults)
    assert dry.imported == 0 and dry.exit_code == 1
    assert await count_cases(intake, municipality) == []

    # Stopped after 150 rows (a limit), then killed mid-flight (the task cancelled with requests in flight).
    partial = await import_file(path, client=intake.intake, token=jwt, limit=150)
    assert partial.imported == 150 and partial.refused_lines == set(faults)
    assert len(await count_cases(intake, municipality)) == 150

    task = asyncio.create_task(import_file(path, client=intake.intake, token=jwt, concurrency=6))
    for _ in range(1200):
        await asyncio.sleep(0.5)
        if len(await count_cases(intake, municipality)) >= 400 or task.done():
            break
    assert not task.done()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    interrupted = len(await count_cases(intake, municipality))
    assert 150 < interrupted < good

    resumed = await import_file(path, client=intake.intake, token=jwt, refused_path=tmp_path / "refused.csv")
    assert resumed.imported == good  # the rows already there answer as before: replayed, not created
    assert resumed.refused_lines == set(faults) and not resumed.failed_lines
    assert resumed.exit_code == 1
    numbers = await count_cases(intake, municipality)
    assert len(numbers) == good == len(set(numbers))
    with (tmp_path / "refused.csv").open(newline="") as refused:
        rows = list(csv.DictReader(refused))
    assert [int(r["line"]) for r in rows] == sorted(faults)
    assert all(r["errors"].startswith(faults[int(r["line"])] + ":") for r in rows)
    assert rows[0]["first_name"] == f"Name{sorted(faults)[0] - 2}"  # the row as it was, to fix and re-run

    again = await import_file(path, client=intake.intake, token=jwt, concurrency=8)
    assert again.imported == good and again.refused_lines == set(faults)
    assert sorted(await count_cases(intake, municipality)) == sorted(numbers)  # nothing created twice


async def test_xlsx_through_the_register_mapping(intake: Stack, coordinator: tuple[str, str], tmp_path: Path) -> None:
    import openpyxl

    municipality, jwt = coordinator
    mapping = load_mapping(ROOT / "docs" / "import" / "revalb.yaml")
    with (ROOT / "docs" / "import" / "revalb-sample.csv").open(newline="", encoding="utf-8") as sample:
        grid = list(csv.reader(sample))
    book = openpyxl.Workbook()
    sheet = book.active
    for row in grid:
        sheet.append(row)
    sheet.append(["3", dt.datetime(2021, 5, 6, 8, 30), "Policia", "Afërdita", "Çela", "F", dt.date(1980, 2, 3),
                  "", "Fizike", "", "Tjeter", None, 5, None])
    sheet.append(["4", "06.05.2021", "Policia", "X", "Y", "Z", "", "", "", "", "", "", "", ""])  # bad sex
    path = tmp_path / "revalb.xlsx"
    book.save(path)

    dry = await import_file(path, client=intake.intake, token=jwt, mapping=mapping, dry_run=True)
    assert [(e.line, e.column) for e in dry.refused] == [(5, "sex")]
    done = await import_file(path, client=intake.intake, token=jwt, mapping=mapping)
    assert done.imported == 3 and done.refused_lines == {5}

    headers = intake.auth("coordinator", municipality)
    page = (await intake.intake.get("/v1/cases", params={"limit": 10}, headers=headers)).json()
    assert len(page["items"]) == 3
    by_id = [(await intake.intake.get(f"/v1/cases/{item['id']}", headers=headers)).json() for item in page["items"]]
    first = next(case for case in by_id if case["survivor"]["last_name"] == "Hoxha")
    assert first["source"] == "police"
    assert first["survivor"]["date_of_birth"] == "1991-04-02"
    assert first["survivor"]["ethnicity"] == "roma"
    assert first["incident"]["violence_types"] == ["physical", "psychological"]
    assert sorted(first["needs"]) == ["legal_aid", "shelter"]
    assert first["children"] == [{"sex": None, "age": 7}, {"sex": None, "age": 3}]
    # 04.03.2019 local (Europe/Tirane, UTC+1 in March) is 2019-03-03T23:00Z.
    assert dt.datetime.fromisoformat(first["reported_at"]) == dt.datetime(2019, 3, 3, 23, tzinfo=dt.UTC)
    third = next(case for case in by_id if case["survivor"]["last_name"] == "Çela")
    assert third["incident"]["perpetrator_relationship"] == "other"
    assert third["children"] == [{"sex": None, "age": 5}]


async def test_reported_at_needs_a_coordinator_token(intake: Stack, tmp_path: Path) -> None:
    municipality = new_municipality()
    police = token(intake.settings, "police", municipality, member_id="m-police")
    path = tmp_path / "r.csv"
    path.write_text("source,first_name,last_name,sex,reported_at\npolice,A,B,female,2020-01-01\n"
                    "police,C,D,female,\n")
    dry = await import_file(path, client=intake.intake, token=police, dry_run=True)
    assert [(e.line, e.column) for e in dry.refused] == [(2, "reported_at")]
    real = await import_file(path, client=intake.intake, token=police)
    assert real.imported == 1 and real.refused_lines == {2}


def test_cli_usage_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from mkr.cli import main

    monkeypatch.delenv("MKR_TOKEN", raising=False)
    path = tmp_path / "r.csv"
    path.write_text("source,first_name,last_name,sex\npolice,A,B,female\n")
    assert main(["import", "cases", str(path)]) == 2  # no token
    assert "token" in capsys.readouterr().err
    fake = "x." + "eyJtdW5pY2lwYWxpdHkiOiAiZWxiYXNhbiJ9" + ".y"  # {"municipality": "elbasan"}
    assert main(["import", "cases", str(tmp_path / "missing.csv"), "--token", fake]) == 2
    (tmp_path / "r.txt").write_text("x")
    assert main(["import", "cases", str(tmp_path / "r.txt"), "--token", fake]) == 2
    (tmp_path / "narrow.csv").write_text("first_name,last_name\nA,B\n")
    assert main(["import", "cases", str(tmp_path / "narrow.csv"), "--token", fake]) == 2
    assert "source" in capsys.readouterr().err
    (tmp_path / "bad.yaml").write_text("columns: {nickname: Emri}\n")
    assert main(["import", "cases", str(path), "--token", fake, "--mapping", str(tmp_path / "bad.yaml")]) == 2
    with pytest.raises(SystemExit) as exit_:
        main(["import", "cases"])
    assert exit_.value.code == 2


def test_cli_dry_run_prints_errors_by_line_and_column(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from mkr.cli import main

    fake = "x." + "eyJtdW5pY2lwYWxpdHkiOiAiZWxiYXNhbiIsICJyb2xlIjogImNvb3JkaW5hdG9yIn0" + ".y"
    path = tmp_path / "r.csv"
    path.write_text("source,first_name,last_name,sex,age\npolice,Arta,Berisha,female,30\n"
                    "police,Besa,Dervishi,unknown,31\n")
    # Validation is local: no server is asked (the base URL is closed), and the exit is 1.
    assert main(["import", "cases", str(path), "--dry-run", "--token", fake, "--base-url", "http://127.0.0.1:9"]) == 1
    out = capsys.readouterr().out
    assert "1 rows refused" in out
    assert re.search(r"^\W*3\W+sex\W+Input should be 'female', 'male' or 'other'", out, re.M), out
    assert "Besa" not in out and "Dervishi" not in out  # no row content printed
    assert (tmp_path / "r.refused.csv").exists()
    good = tmp_path / "g.csv"
    good.write_text("source,first_name,last_name,sex\npolice,A,B,female\n")
    assert main(["import", "cases", str(good), "--dry-run", "--token", fake]) == 0


def test_semicolon_csv_and_multiline_cells_keep_file_lines(tmp_path: Path) -> None:
    path = tmp_path / "s.csv"
    path.write_text('source;first_name;last_name;sex;description\npolice;A;B;female;"two\nlines"\n'
                    "police;C;D;bogus;\n", encoding="utf-8")
    sheet = importer.read_sheet(path)
    assert [line for line, _ in sheet.rows] == [2, 4]
    good, errors = importer.validate_sheet(sheet, importer.Mapping(), municipality="elbasan", role="coordinator")
    assert [line for line, _ in good] == [2] and [(e.line, e.column) for e in errors] == [(4, "sex")]
    with pytest.raises(UsageError):
        importer.token_claims("not-a-jwt")


def test_export_usage_errors_exit_2() -> None:
    from mkr.cli import main

    assert main(["export", "cases", "--from", "2026-02-01", "--to", "2026-01-01", "--token", "t"]) == 2
    assert main(["export", "cases", "--from", "2026-13-01", "--to", "2026-01-01", "--token", "t"]) == 2
