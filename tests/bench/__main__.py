"""`make bench`: the embedded stack as real processes under load; figures go to BENCHMARKS.md.

Each scenario prints its figures and the run writes them, with the machine and the date, into
BENCHMARKS.md, replacing the previous run's figures but keeping its hand-written notes (analysis, one-off
runs), which sit between `<!-- kept by make bench (top|end): ... -->` and `<!-- end of kept notes -->`.
Durations are short enough for the whole run to take a few minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import platform
import re
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from tests.bench import scenarios
from tests.processes import LaunchedStack


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass

    memory = ""
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        memory = f", {kb / 1024 / 1024:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    system = f"{platform.system()} {platform.release()}"
    return f"{system}, {os.cpu_count()} cores ({cpu}){memory}, Python {platform.python_version()}"


LOAD = {"start": "", "end": ""}


def load_average() -> str:
    return " / ".join(f"{x:.1f}" for x in os.getloadavg())


# Hand-written parts of the report (analysis, one-off runs with --only) sit between these markers; a new run
# carries them into the file it writes: "top" ones after its targets at a glance, "end" ones after its tables.
KEPT_OPEN = "<!-- kept by make bench"
KEPT_BEGIN = KEPT_OPEN + " ({where}): hand-written, carried into the next report -->"
KEPT_END = "<!-- end of kept notes -->"
KEPT = re.compile(
    re.escape(KEPT_OPEN) + r" \((top|end)\): [^\n]*-->[ \t]*\r?\n.*?" + re.escape(KEPT_END) + r"[ \t]*(?:\r?\n)?", re.S
)


class KeptNotesUnreadable(ValueError):
    """The previous report's markers do not pair up: writing over it would lose notes."""


def kept_notes(previous: str) -> dict[str, list[str]]:
    """The kept blocks of the previous report, markers included, by where they go ("top", "end").

    Raises KeptNotesUnreadable when a marker is not part of a well-formed block (an unknown place, a begin
    without its end or inside another block, an end too many): each of those leaves more markers than blocks,
    and the caller must not overwrite that file."""
    blocks = list(KEPT.finditer(previous))
    if previous.count(KEPT_OPEN) != len(blocks) or previous.count(KEPT_END) != len(blocks):
        raise KeptNotesUnreadable(f"the kept-notes markers do not pair up ({KEPT_BEGIN} ... {KEPT_END})")
    found: dict[str, list[str]] = {"top": [], "end": []}
    for match in blocks:
        found[match.group(1)].append(match.group(0).rstrip("\r\n \t"))
    return found


def render(results: list[tuple[str, list[dict[str, Any]], str]], kept: dict[str, list[str]] | None = None) -> str:
    kept = kept or {"top": [], "end": []}
    today = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Benchmarks",
        "",
        f"Measured by `make bench` on {today}; machine: {machine()}.",
        "The embedded stack (`mkr run`: embedded PostgreSQL 18, Tansu broker, four services, one uvicorn",
        "worker each) runs as real processes on loopback; the load generator shares the same 2 cores.",
        "",
    ]
    lines += [
        f"Load average (1/5/15 min) when the report was written: {LOAD['end']}; before the stack started: "
        f"{LOAD['start']}. Anything above ~2 means other work shared the 2 cores, so figures are noisy.",
        "",
    ]
    verdicts = []
    for title, _, note in results:
        for word in ("FAILED", "missed", "met"):
            if f"**{word}**" in note:
                verdicts.append(f"- {title}: **{word}**")
                break
    if verdicts:
        lines += ["Targets at a glance (details under each table):", "", *verdicts, ""]
    for block in kept.get("top", []):
        lines += [block, ""]
    for title, rows, note in results:
        lines += [f"## {title}", ""]
        if note:
            lines += [note, ""]
        if rows:
            keys = list(rows[0].keys())
            lines.append("| " + " | ".join(keys) + " |")
            lines.append("| " + " | ".join("---" for _ in keys) + " |")
            for row in rows:
                lines.append("| " + " | ".join(str(row.get(k, "")) for k in keys) + " |")
            lines.append("")
    for block in kept.get("end", []):
        lines += [block, ""]
    return "\n".join(lines)


async def run_all(
    stack: LaunchedStack, quick: bool, only: list[str] | None = None
) -> list[tuple[str, list[dict[str, Any]], str]]:
    results: list[tuple[str, list[dict[str, Any]], str]] = []
    for scenario in scenarios.ALL:
        if only and scenario.__name__ not in only:
            continue
        print(f"-- {scenario.__name__}", flush=True)
        began = time.perf_counter()
        try:
            settled = 0.0
            if scenario.__name__ not in scenarios.NO_SETTLE:
                settled = await scenarios.settle(stack)
            outcome = await scenario(stack, quick=quick)  # type: ignore[call-arg]
            if settled >= 1:
                outcome = (
                    outcome[0],
                    outcome[1],
                    f"{outcome[2]} (Before this run the consumers needed "
                    f"{settled:.0f} s to work off the backlog of the scenarios before.)",
                )
        except Exception as exc:  # a failed scenario is reported as such, the others still run
            traceback.print_exc()
            title = (scenario.__doc__ or scenario.__name__).split("\n")[0]
            outcome = title, [], f"**FAILED**: {type(exc).__name__}: {exc}".replace("\n", " ")
        print(f"   ({time.perf_counter() - began:.0f} s) {outcome}", flush=True)
        results.append(outcome)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench")
    parser.add_argument("--quick", action="store_true", help="short runs, to check the scenarios work")
    parser.add_argument("--output", default="BENCHMARKS.md")
    parser.add_argument("--only", nargs="*", help="scenario function names to run (default: all)")
    args = parser.parse_args()
    LOAD["start"] = load_average()
    with tempfile.TemporaryDirectory(prefix="mkr-bench-") as tmp:
        stack = LaunchedStack(state=Path(tmp) / "state")
        log = open(Path(tmp) / "stack.log", "wb")
        stack.start(output=log)
        try:
            results = asyncio.run(run_all(stack, args.quick, args.only))
        finally:
            stack.stop()
            log.close()
    LOAD["end"] = load_average()
    output = Path(args.output)
    previous = output.read_text() if output.exists() else ""
    try:
        kept = kept_notes(previous)
    except KeptNotesUnreadable as why:  # the figures are not lost: they go next to it
        output = output.with_name(output.name + ".new")
        print(f"{args.output}: {why}; left as it is, the new report goes to {output}")
        kept = {"top": [], "end": []}
    output.write_text(render(results, kept))
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
