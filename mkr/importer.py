"""`mkr import cases` and `mkr export cases` (CONTRACT §12): paper and register records in, the register out.

A file (CSV or .xlsx) is read row by row into the plain template of §12, directly or through a column
mapping (YAML or JSON, for other layouts such as a register export: see docs/import/). Every row is
validated with intake's own request schema (`services.intake.schemas.CaseReport`) plus the checks the
intake route adds (reported_at never in the future, only for coordinators; no birth after the report),
so a dry run refuses exactly what the API would. A real run posts each valid row to `POST /v1/cases`
with an `Idempotency-Key` made of the file's content hash and the row's line: a re-run, or a run
resumed after an interruption, replays the first answers and creates nothing twice.

Refused rows are reported by their line in the file (the header is line 1) and their column, and
written to a CSV beside the file. Exit codes: 0 every row imported (or would be), 1 some refused,
2 usage error. Nothing of a row's content is printed except the column name and the reason.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import csv
import datetime as dt
import hashlib
import io
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import httpx
from pydantic import ValidationError

from shared import profiles

# The plain template's columns (CONTRACT §12), in their order.
TEMPLATE_COLUMNS = (
    "reported_at", "source", "first_name", "last_name", "sex", "date_of_birth", "age", "ethnicity",
    "violence_types", "needs", "perpetrator_relationship", "occurred_at", "children", "description",
)
REQUIRED_COLUMNS = ("source", "first_name", "last_name", "sex")
LIST_COLUMNS = frozenset({"violence_types", "needs", "children"})


def default_timezone() -> str:
    """The country profile's zone (MKR_PROFILE, as the services read it; Albania: Europe/Tirane)."""
    return profiles.load(os.environ.get("MKR_PROFILE") or "albania").timezone

CLOCK_SKEW = dt.timedelta(minutes=5)  # as intake allows
MAX_ATTEMPTS = 5  # per row, for 429/502/503/504 and connection errors
DEFAULT_CONCURRENCY = 4


class UsageError(Exception):
    """A problem with the command line, the file's layout or the mapping: exit 2."""


# --- the mapping ---


@dataclass
class Mapping:
    """How another layout maps onto the template.

    columns: template column -> the file's column header.
    values: template column -> {the file's value -> the template's value} (codes of another register).
    separator: between the values of list columns (default ';').
    date_formats: strptime formats tried, in order, for dates and times (ISO 8601 is always accepted).
    timezone: the zone of dates and times written without one (default: the country profile's).
    """

    columns: dict[str, str] = field(default_factory=lambda: {c: c for c in TEMPLATE_COLUMNS})
    values: dict[str, dict[str, str]] = field(default_factory=dict)
    separator: str = ";"
    date_formats: list[str] = field(default_factory=list)
    timezone: str = field(default_factory=default_timezone)

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


def load_mapping(path: Path) -> Mapping:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot read the mapping {path}: {exc.strerror}") from exc
    try:
        if path.suffix.lower() == ".json":
            raw = json.loads(text)
        else:
            import yaml

            raw = yaml.safe_load(text)
    except Exception as exc:
        raise UsageError(f"the mapping {path} is not valid {path.suffix.lstrip('.') or 'YAML'}") from exc
    if not isinstance(raw, dict):
        raise UsageError("the mapping must be an object with 'columns' (and optionally 'values', ...)")
    unknown_keys = set(raw) - {"columns", "values", "separator", "date_formats", "timezone"}
    if unknown_keys:
        raise UsageError(f"unknown keys in the mapping: {', '.join(sorted(unknown_keys))}")
    columns = raw.get("columns")
    if not isinstance(columns, dict) or not columns or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in columns.items()
    ):
        raise UsageError("'columns' must map template columns to the file's column headers")
    unknown = set(columns) - set(TEMPLATE_COLUMNS)
    if unknown:
        raise UsageError(f"'columns' names no such template column: {', '.join(sorted(unknown))}")
    values = raw.get("values") or {}
    if not isinstance(values, dict) or not all(
        k in TEMPLATE_COLUMNS and isinstance(v, dict) for k, v in values.items()
    ):
        raise UsageError("'values' must map template columns to {file value: template value}")
    separator = raw.get("separator", ";")
    formats = raw.get("date_formats") or []
    timezone = raw.get("timezone") or default_timezone()
    if not isinstance(separator, str) or not separator:
        raise UsageError("'separator' must be a non-empty string")
    if not isinstance(formats, list) or not all(isinstance(f, str) for f in formats):
        raise UsageError("'date_formats' must be a list of strptime formats")
    mapping = Mapping(
        columns=dict(columns),
        values={k: {str(a).strip().casefold(): str(b) for a, b in v.items()} for k, v in values.items()},
        separator=separator,
        date_formats=list(formats),
        timezone=str(timezone),
    )
    try:
        mapping.zone  # noqa: B018 - validates the name
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise UsageError(f"unknown timezone {timezone!r} in the mapping") from exc
    return mapping


# --- reading the file ---


Cell = str | int | float | dt.datetime | dt.date | None


@dataclass
class Sheet:
    headers: list[str]
    rows: list[tuple[int, dict[str, Cell]]]  # (line in the file, header -> cell)
    digest: str  # sha256 of the file's bytes


def read_sheet(path: Path) -> Sheet:
    try:
        content = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from exc
    digest = hashlib.sha256(content).hexdigest()
    suffix = path.suffix.lower()
    if suffix == ".csv":
        grid = _csv_grid(content)
    elif suffix == ".xlsx":
        grid = _xlsx_grid(content)
    else:
        raise UsageError("the file must be .csv or .xlsx")
    if not grid:
        raise UsageError("the file is empty (a header row is required)")
    headers = [str(h).strip() if h is not None else "" for h in grid[0]]
    if len(set(h for h in headers if h)) != len([h for h in headers if h]):
        raise UsageError("the header row names a column twice")
    rows: list[tuple[int, dict[str, Cell]]] = []
    for index, cells in enumerate(grid[1:], start=2):
        if all(c is None or (isinstance(c, str) and not c.strip()) for c in cells):
            continue  # a blank line is no record
        rows.append((index, {h: (cells[i] if i < len(cells) else None) for i, h in enumerate(headers) if h}))
    return Sheet(headers=[h for h in headers if h], rows=rows, digest=digest)


def _csv_grid(content: bytes) -> list[list[Cell]]:
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UsageError("the CSV file is not UTF-8") from exc
    # The delimiter from the header line only: data cells hold ';' between list values.
    header_line = text.split("\n", 1)[0]
    delimiter = max((",", ";", "\t"), key=header_line.count)
    # Line numbers are the file's lines: a quoted cell spanning lines counts from its record's first line.
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    grid: list[list[Cell]] = []
    lines: list[int] = []
    start = 1
    for record in reader:
        grid.append(list(record))
        lines.append(start)
        start = reader.line_num + 1
    # Pad so that grid index + 1 == line number of the record (records spanning lines keep their first line).
    padded: list[list[Cell]] = []
    for line, cells in zip(lines, grid, strict=True):
        while len(padded) < line - 1:
            padded.append([])
        padded.append(cells)
    return padded


def _xlsx_grid(content: bytes) -> list[list[Cell]]:
    import openpyxl

    try:
        book = openpyxl.load_workbook(io.BytesIO(content), read_only=True, data_only=True)
    except Exception as exc:
        raise UsageError("the .xlsx file cannot be read as a workbook") from exc
    try:
        sheet = book.worksheets[0]
        return [list(row) for row in sheet.iter_rows(values_only=True)]
    finally:
        book.close()


# --- one row -> one report ---


@dataclass
class RowError:
    line: int
    column: str
    message: str


def _text(cell: Cell) -> str | None:
    if cell is None:
        return None
    if isinstance(cell, float) and cell.is_integer():
        cell = int(cell)
    value = str(cell).strip()
    return value or None


def _parse_datetime(cell: Cell, mapping: Mapping) -> dt.datetime | None:
    """A date and time (or a date: local midnight) as an aware datetime; ValueError when it is not one."""
    if cell is None or (isinstance(cell, str) and not cell.strip()):
        return None
    value: dt.datetime
    if isinstance(cell, dt.datetime):
        value = cell
    elif isinstance(cell, dt.date):
        value = dt.datetime.combine(cell, dt.time())
    else:
        text = str(cell).strip()
        parsed: dt.datetime | None = None
        try:
            parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            for fmt in mapping.date_formats:
                try:
                    parsed = dt.datetime.strptime(text, fmt)
                    break
                except ValueError:
                    continue
        if parsed is None:
            raise ValueError("not a date and time (ISO 8601 such as 2021-03-04T10:00+01:00, or a date)")
        value = parsed
    return value if value.tzinfo is not None else value.replace(tzinfo=mapping.zone)


def _parse_date(cell: Cell, mapping: Mapping) -> dt.date | None:
    if cell is None or (isinstance(cell, str) and not cell.strip()):
        return None
    if isinstance(cell, dt.datetime):
        return cell.date()
    if isinstance(cell, dt.date):
        return cell
    text = str(cell).strip()
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        for fmt in mapping.date_formats:
            try:
                return dt.datetime.strptime(text, fmt).date()
            except ValueError:
                continue
    raise ValueError("not a date (ISO 8601 such as 1991-04-02)")


def _code(column: str, value: str, mapping: Mapping) -> str:
    return mapping.values.get(column, {}).get(value.casefold(), value)


def build_report(
    cells: dict[str, Cell], *, line: int, municipality: str, mapping: Mapping, role: str | None,
    now: dt.datetime | None = None,
) -> tuple[dict[str, Any] | None, list[RowError]]:
    """One row as a §5 report body, validated as intake validates it; (None, errors) when refused."""
    from services.intake.schemas import CaseReport

    errors: list[RowError] = []

    def cell(column: str) -> Cell:
        header = mapping.columns.get(column)
        return cells.get(header) if header else None

    def text(column: str) -> str | None:
        value = _text(cell(column))
        return _code(column, value, mapping) if value is not None and column not in LIST_COLUMNS else value

    def items(column: str) -> list[str]:
        value = _text(cell(column))
        if value is None:
            return []
        return [_code(column, part.strip(), mapping) for part in value.split(mapping.separator) if part.strip()]

    def parsed(column: str, parse: Callable[[Cell, Mapping], Any]) -> Any:
        try:
            value = parse(cell(column), mapping)
        except ValueError as exc:
            errors.append(RowError(line, column, str(exc)))
            return None
        return value.isoformat() if value is not None else None

    survivor: dict[str, Any] = {"first_name": text("first_name"), "last_name": text("last_name"),
                                "sex": text("sex")}
    if (dob := parsed("date_of_birth", _parse_date)) is not None:
        survivor["date_of_birth"] = dob
    if (age := text("age")) is not None:
        survivor["age"] = int(age) if age.lstrip("-").isdigit() else age
    if (ethnicity := text("ethnicity")) is not None:
        survivor["ethnicity"] = ethnicity
    incident: dict[str, Any] = {}
    if violence := items("violence_types"):
        incident["violence_types"] = violence
    if (relationship := text("perpetrator_relationship")) is not None:
        incident["perpetrator_relationship"] = relationship
    if (occurred := parsed("occurred_at", _parse_datetime)) is not None:
        incident["occurred_at"] = occurred
    if (description := _text(cell("description"))) is not None:
        incident["description"] = description
    body: dict[str, Any] = {"municipality": municipality, "source": text("source"), "survivor": survivor}
    if incident:
        body["incident"] = incident
    if needs := items("needs"):
        body["needs"] = needs
    children = []
    for part in items("children"):
        children.append({"age": int(part) if part.lstrip("-").isdigit() else part})
    if children:
        body["children"] = children
    if (reported := parsed("reported_at", _parse_datetime)) is not None:
        body["reported_at"] = reported
    if errors:
        return None, errors
    # Absent required values as absent, so the schema names them "missing".
    body["survivor"] = {k: v for k, v in survivor.items() if v is not None}
    body = {k: v for k, v in body.items() if v is not None}
    try:
        report = CaseReport.model_validate(body)
    except ValidationError as exc:
        for problem in exc.errors(include_url=False, include_input=False):
            errors.append(RowError(line, _column_of(problem["loc"]), _message(problem)))
        return None, _dedupe(errors)
    now = now or dt.datetime.now(dt.UTC)
    if report.reported_at is not None:
        if role is not None and role != "coordinator":
            errors.append(RowError(line, "reported_at", "only a coordinator token may set reported_at"))
        elif report.reported_at > now + CLOCK_SKEW:
            errors.append(RowError(line, "reported_at", "reported_at may not be in the future"))
    reported_day = (report.reported_at or now).astimezone(mapping.zone).date()
    if report.survivor.date_of_birth is not None and report.survivor.date_of_birth > reported_day:
        errors.append(RowError(line, "date_of_birth", "date_of_birth is after the report date"))
    if errors:
        return None, errors
    return body, []


_LOC_COLUMNS = {
    ("survivor", "first_name"): "first_name", ("survivor", "last_name"): "last_name",
    ("survivor", "sex"): "sex", ("survivor", "date_of_birth"): "date_of_birth", ("survivor", "age"): "age",
    ("survivor", "ethnicity"): "ethnicity", ("incident", "violence_types"): "violence_types",
    ("incident", "perpetrator_relationship"): "perpetrator_relationship",
    ("incident", "occurred_at"): "occurred_at", ("incident", "description"): "description",
}


def _column_of(loc: tuple[int | str, ...]) -> str:
    head = tuple(str(p) for p in loc[:2])
    if head in _LOC_COLUMNS:
        return _LOC_COLUMNS[head]
    if loc and loc[0] == "survivor":
        return "date_of_birth"  # the model-level check: date_of_birth and age together, or too early
    if loc and str(loc[0]) in ("needs", "children", "source", "reported_at", "municipality"):
        return str(loc[0])
    return ".".join(str(p) for p in loc) or "row"


def _message(problem: Any) -> str:
    msg = str(problem.get("msg", "invalid value"))
    return msg.removeprefix("Value error, ")


def _dedupe(errors: list[RowError]) -> list[RowError]:
    seen: set[tuple[str, str]] = set()
    out = []
    for error in errors:
        if (error.column, error.message) not in seen:
            seen.add((error.column, error.message))
            out.append(error)
    return out


# --- the run ---


@dataclass
class Outcome:
    rows: int = 0
    imported: int = 0
    refused: list[RowError] = field(default_factory=list)
    refused_lines: set[int] = field(default_factory=set)
    failed_lines: set[int] = field(default_factory=set)  # never answered (server or network): try again
    seconds: float = 0.0

    @property
    def exit_code(self) -> int:
        return 0 if not self.refused_lines and not self.failed_lines else 1


def token_claims(token: str) -> dict[str, Any]:
    """The token's claims, unverified (the API verifies it): municipality and role for the rows."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError) as exc:
        raise UsageError("the token is not a JWT") from exc
    if not isinstance(claims, dict) or not isinstance(claims.get("municipality"), str):
        raise UsageError("the token carries no municipality")
    return claims


def idempotency_key(digest: str, line: int) -> str:
    return f"mkr-import-{digest[:40]}-{line}"


def validate_sheet(
    sheet: Sheet, mapping: Mapping, *, municipality: str, role: str | None
) -> tuple[list[tuple[int, dict[str, Any]]], list[RowError]]:
    missing = [c for c in REQUIRED_COLUMNS if mapping.columns.get(c) not in sheet.headers]
    if missing:
        names = ", ".join(f"{c} ({mapping.columns.get(c) or 'not mapped'})" for c in missing)
        raise UsageError(f"the header row lacks required columns: {names}")
    good: list[tuple[int, dict[str, Any]]] = []
    errors: list[RowError] = []
    now = dt.datetime.now(dt.UTC)
    for line, cells in sheet.rows:
        body, row_errors = build_report(
            cells, line=line, municipality=municipality, mapping=mapping, role=role, now=now
        )
        if body is None:
            errors.extend(row_errors)
        else:
            good.append((line, body))
    return good, errors


async def post_rows(
    client: httpx.AsyncClient,
    rows: list[tuple[int, dict[str, Any]]],
    *,
    digest: str,
    token: str,
    outcome: Outcome,
    concurrency: int = DEFAULT_CONCURRENCY,
    on_done: Callable[[], None] | None = None,
) -> None:
    """POST each row with its Idempotency-Key, a few in flight; results go into `outcome`."""
    queue: asyncio.Queue[tuple[int, dict[str, Any]]] = asyncio.Queue()
    for row in rows:
        queue.put_nowait(row)
    headers = {"Authorization": f"Bearer {token}"}

    async def worker() -> None:
        while True:
            try:
                line, body = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            await _post_one(client, line, body, headers | {"Idempotency-Key": idempotency_key(digest, line)},
                            outcome)
            if on_done is not None:
                on_done()

    await asyncio.gather(*(worker() for _ in range(max(1, concurrency))))


async def _post_one(
    client: httpx.AsyncClient, line: int, body: dict[str, Any], headers: dict[str, str], outcome: Outcome
) -> None:
    for attempt in range(1, MAX_ATTEMPTS + 1):
        try:
            response = await client.post("/v1/cases", json=body, headers=headers)
        except httpx.TransportError:
            if attempt == MAX_ATTEMPTS:
                outcome.failed_lines.add(line)
                outcome.refused.append(RowError(line, "row", "no answer from the server; run again to resume"))
                return
            await asyncio.sleep(min(5.0, 0.25 * 2**attempt))
            continue
        if response.status_code in (200, 201):
            outcome.imported += 1
            return
        # 409 on a key "still in progress" (an interrupted run's request racing), 429, 5xx: retry.
        if response.status_code in (409, 429, 500, 502, 503, 504) and attempt < MAX_ATTEMPTS:
            await asyncio.sleep(min(5.0, 0.25 * 2**attempt))
            continue
        if response.status_code == 401:  # the token (expired?): not the row's fault; a re-run resumes
            outcome.failed_lines.add(line)
            outcome.refused.append(RowError(line, "row", f"{response.status_code}: {_detail(response)}"))
            return
        for error in _problem_errors(line, response):
            outcome.refused.append(error)
        if response.status_code >= 500:
            outcome.failed_lines.add(line)
        else:
            outcome.refused_lines.add(line)
        return


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.reason_phrase
    return str(body.get("detail") or body.get("title") or response.reason_phrase) if isinstance(body, dict) else ""


def _problem_errors(line: int, response: httpx.Response) -> list[RowError]:
    try:
        body = response.json()
    except ValueError:
        body = {}
    found = body.get("errors") if isinstance(body, dict) else None
    if isinstance(found, list) and found:
        out = []
        for item in found:
            loc = item.get("loc", []) if isinstance(item, dict) else []
            loc = tuple(loc[1:] if loc and loc[0] == "body" else loc)
            out.append(RowError(line, _column_of(loc), f"{response.status_code}: {item.get('msg', 'invalid')}"))
        return out
    return [RowError(line, "row", f"{response.status_code}: {_detail(response)}")]


def write_refused(path: Path, sheet: Sheet, errors: list[RowError]) -> None:
    """The refused rows as they were in the file, each with its line and reasons (for fixing and re-running)."""
    reasons: dict[int, list[str]] = {}
    for error in errors:
        reasons.setdefault(error.line, []).append(f"{error.column}: {error.message}")
    cells = dict(sheet.rows)
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(["line", "errors", *sheet.headers])
        for line in sorted(reasons):
            row = cells.get(line, {})
            writer.writerow([line, " | ".join(reasons[line]), *(_csv_cell(row.get(h)) for h in sheet.headers)])


def _csv_cell(value: Cell) -> str:
    if value is None:
        return ""
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    return str(value)


def print_errors(errors: list[RowError], file: Any = None) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{len({e.line for e in errors})} rows refused", show_lines=False)
    table.add_column("line", justify="right")
    table.add_column("column")
    table.add_column("error")
    for error in sorted(errors, key=lambda e: (e.line, e.column)):
        table.add_row(str(error.line), error.column, error.message)
    Console(file=file or sys.stdout, width=120).print(table)


def _progress(total: int) -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeRemainingColumn
    from rich.progress import Task as RichTask
    from rich.text import Text

    class RateColumn(ProgressColumn):
        def render(self, task: RichTask) -> Text:
            return Text(f"{task.speed or 0:.1f} rows/s")

    return Progress(
        TextColumn("importing"), BarColumn(), MofNCompleteColumn(), RateColumn(), TextColumn("left"),
        TimeRemainingColumn(), transient=False, console=_stderr_console(),
    )


def _stderr_console() -> Any:
    from rich.console import Console

    return Console(file=sys.stderr)


async def import_file(
    path: Path,
    *,
    client: httpx.AsyncClient,
    token: str,
    mapping: Mapping | None = None,
    dry_run: bool = False,
    concurrency: int = DEFAULT_CONCURRENCY,
    refused_path: Path | None = None,
    progress: bool = False,
    limit: int | None = None,
) -> Outcome:
    """The whole command without the argument parsing (tests call this with an in-process client).

    `limit`: post at most this many valid rows (the rest wait for the next run, which resumes).
    """
    import time

    mapping = mapping or Mapping()
    claims = token_claims(token)
    sheet = read_sheet(path)
    good, errors = validate_sheet(sheet, mapping, municipality=claims["municipality"], role=claims.get("role"))
    outcome = Outcome(rows=len(sheet.rows), refused=list(errors), refused_lines={e.line for e in errors})
    started = time.perf_counter()
    if dry_run:
        outcome.imported = 0
    else:
        todo = good if limit is None else good[:limit]
        if progress:
            with _progress(len(todo)) as bar:
                task = bar.add_task("import", total=len(todo))
                await post_rows(client, todo, digest=sheet.digest, token=token, outcome=outcome,
                                concurrency=concurrency, on_done=lambda: bar.advance(task))
        else:
            await post_rows(client, todo, digest=sheet.digest, token=token, outcome=outcome,
                            concurrency=concurrency)
    outcome.seconds = time.perf_counter() - started
    if refused_path is not None and outcome.refused:
        write_refused(refused_path, sheet, outcome.refused)
    return outcome


# --- the commands ---


def _default_url(service: str) -> str:
    from mkr.registry import local_url
    from shared.settings import Settings

    return local_url(Settings(), service)


def _token(args: argparse.Namespace) -> str:
    token = args.token or os.environ.get("MKR_TOKEN")
    if not token:
        raise UsageError("a token is required: --token T or MKR_TOKEN")
    return str(token)


def _cmd_import(args: argparse.Namespace) -> int:
    try:
        token = _token(args)
        mapping = load_mapping(Path(args.mapping)) if args.mapping else None
        path = Path(args.file)
        if not path.is_file():
            raise UsageError(f"no such file: {path}")
        if args.concurrency < 1 or args.concurrency > 32:
            raise UsageError("--concurrency must be between 1 and 32")
        refused_path = Path(args.refused) if args.refused else path.with_name(path.stem + ".refused.csv")

        async def run() -> Outcome:
            async with httpx.AsyncClient(base_url=args.base_url or _default_url("intake"), timeout=30) as client:
                return await import_file(
                    path, client=client, token=token, mapping=mapping, dry_run=args.dry_run,
                    concurrency=args.concurrency, refused_path=refused_path,
                    progress=not args.dry_run and not args.quiet,
                )

        outcome = asyncio.run(run())
    except UsageError as exc:
        print(f"mkr import: {exc}", file=sys.stderr)
        return 2
    if outcome.refused:
        print_errors(outcome.refused)
    refused = len(outcome.refused_lines | outcome.failed_lines)
    if args.dry_run:
        print(f"dry run: {outcome.rows} rows, {outcome.rows - refused} valid, {refused} refused; nothing written")
    else:
        rate = outcome.imported / outcome.seconds if outcome.seconds else 0.0
        print(f"{outcome.rows} rows: {outcome.imported} imported (new or already there), {refused} refused "
              f"in {outcome.seconds:.1f} s ({rate:.1f} rows/s)")
        if outcome.failed_lines:
            print(f"{len(outcome.failed_lines)} rows got no answer; run the same command again to resume")
    if outcome.refused:
        print(f"refused rows written to {refused_path}")
    return outcome.exit_code


async def export_cases(
    client: httpx.AsyncClient, out: Any, *, token: str, start: dt.date, end: dt.date,
    municipality: str | None = None,
) -> int:
    """Stream referral's register CSV (`GET /v1/reports/cases.csv`) into `out` (binary); 0, or the exit code."""
    params = {"from": start.isoformat(), "to": end.isoformat()}
    if municipality:
        params["municipality"] = municipality
    async with client.stream(
        "GET", "/v1/reports/cases.csv", params=params, headers={"Authorization": f"Bearer {token}"}
    ) as response:
        if response.status_code != 200:
            await response.aread()
            print(f"mkr export: {response.status_code}: {_detail(response)}", file=sys.stderr)
            return 2 if response.status_code in (400, 401, 403, 422) else 1
        async for chunk in response.aiter_bytes():
            out.write(chunk)
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    try:
        token = _token(args)
        try:
            start, end = dt.date.fromisoformat(args.from_), dt.date.fromisoformat(args.to)
        except ValueError as exc:
            raise UsageError("--from and --to are dates such as 2026-01-31") from exc
        if end < start:
            raise UsageError("--to is before --from")
    except UsageError as exc:
        print(f"mkr export: {exc}", file=sys.stderr)
        return 2

    async def run(out: Any) -> int:
        async with httpx.AsyncClient(base_url=args.base_url or _default_url("referral"), timeout=60) as client:
            return await export_cases(client, out, token=token, start=start, end=end,
                                      municipality=args.municipality)

    try:
        if args.output:
            with open(args.output, "wb") as out:
                return asyncio.run(run(out))
        code = asyncio.run(run(sys.stdout.buffer))
        sys.stdout.buffer.flush()
        return code
    except httpx.HTTPError as exc:
        print(f"mkr export: no answer from the server ({type(exc).__name__})", file=sys.stderr)
        return 1


def register_commands(sub: Any) -> None:
    """Add `import` and `export` to the `mkr` parser (mkr/cli.py)."""
    imp = sub.add_parser("import", help="import case records from a CSV or .xlsx file (CONTRACT §12)")
    imp_sub = imp.add_subparsers(dest="what", required=True)
    cases = imp_sub.add_parser("cases", help="POST each row to /v1/cases, idempotently")
    cases.add_argument("file")
    cases.add_argument("--dry-run", action="store_true", help="validate every row; write nothing")
    cases.add_argument("--mapping", help="a column mapping (YAML or JSON) for another layout; see docs/import/")
    cases.add_argument("--base-url", help="intake's base URL (default: the local one)")
    cases.add_argument("--token", help="a bearer token (default: $MKR_TOKEN)")
    cases.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY, help="requests in flight")
    cases.add_argument("--refused", help="where to write the refused rows (default: FILE.refused.csv)")
    cases.add_argument("--quiet", action="store_true", help="no progress bar")
    cases.set_defaults(func=_cmd_import)

    exp = sub.add_parser("export", help="export the register (CONTRACT §12)")
    exp_sub = exp.add_subparsers(dest="what", required=True)
    ecases = exp_sub.add_parser("cases", help="the register's CSV for a period, streamed")
    ecases.add_argument("--from", dest="from_", required=True, help="first day (YYYY-MM-DD, UTC)")
    ecases.add_argument("--to", required=True, help="last day, inclusive")
    ecases.add_argument("--municipality", help="for national roles")
    ecases.add_argument("--output", "-o", help="a file (default: standard output)")
    ecases.add_argument("--base-url", help="referral's base URL (default: the local one)")
    ecases.add_argument("--token", help="a bearer token (default: $MKR_TOKEN)")
    ecases.set_defaults(func=_cmd_export)
