"""Invented case records in the plain import template (CONTRACT §12), with bad rows planted at known lines."""

from __future__ import annotations

import csv
import datetime as dt
import random
from pathlib import Path
from typing import Any

from mkr.importer import TEMPLATE_COLUMNS

# line -> (column, why): the bad rows planted in the file, each with one fault of a kind intake refuses.
FAULTS: list[tuple[str, Any]] = [
    ("sex", "unknown"),
    ("last_name", None),
    ("source", "radio"),
    ("violence_types", "physical;kicking"),
    ("needs", "shelter;yacht"),
    ("children", "4;30"),
    ("date_of_birth", "1991-13-02"),
    ("reported_at", "2099-01-01T10:00:00+01:00"),
    ("age", "200"),
    ("occurred_at", "yesterday"),
    ("perpetrator_relationship", "neighbour"),
    ("ethnicity", "martian"),
]


def good_row(rng: random.Random, n: int) -> dict[str, Any]:
    reported = dt.datetime(2019, 1, 1, 9, tzinfo=dt.UTC) + dt.timedelta(hours=7 * n)
    row: dict[str, Any] = {c: "" for c in TEMPLATE_COLUMNS}
    row.update(
        reported_at=reported.isoformat(),
        source=rng.choice(["police", "social_services", "health", "ngo"]),
        first_name=f"Name{n}",
        last_name=f"Family{n % 97}",
        sex=rng.choice(["female", "female", "male"]),
        violence_types=";".join(rng.sample(["physical", "psychological", "economic", "sexual"], 2)),
        needs=rng.choice(["", "shelter", "legal_aid;health"]),
        perpetrator_relationship=rng.choice(["spouse", "ex_partner", ""]),
        occurred_at=(reported - dt.timedelta(days=1)).date().isoformat(),
        children=rng.choice(["", "7", "3;12"]),
    )
    if n % 2:
        row["date_of_birth"] = f"{1960 + n % 40}-0{1 + n % 9}-1{n % 9}"
    else:
        row["age"] = str(18 + n % 60)
    return row


def write_file(path: Path, rows: int = 1000, seed: int = 7) -> dict[int, str]:
    """The file and its planted faults: {line: column}. The header is line 1."""
    rng = random.Random(seed)
    faults: dict[int, str] = {}
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.DictWriter(out, fieldnames=list(TEMPLATE_COLUMNS))
        writer.writeheader()
        for n in range(rows):
            line = n + 2
            row = good_row(rng, n)
            if n % 20 == 13:  # 50 bad rows, spread through the file
                column, value = FAULTS[(n // 20) % len(FAULTS)]
                row[column] = "" if value is None else value
                if column == "age":
                    row["date_of_birth"] = ""
                faults[line] = column
            writer.writerow(row)
    return faults
