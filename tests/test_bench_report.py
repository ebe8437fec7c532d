"""`make bench` rewrites BENCHMARKS.md with its new figures and keeps the hand-written notes between its
markers (tests/bench/__main__.py): the analysis of what bounds a target must outlive the next run."""

from __future__ import annotations

import pytest

from tests.bench.__main__ import KEPT_BEGIN, KEPT_END, KeptNotesUnreadable, kept_notes, render

RESULTS = [("Intake: reports per second", [{"clients": 32, "HTTP reports/s": 155.3}], "Target: **met**")]


def _block(where: str, text: str) -> str:
    return f"{KEPT_BEGIN.format(where=where)}\n{text}\n{KEPT_END}"


def test_a_new_report_keeps_the_previous_ones_notes_in_their_places() -> None:
    top, end = _block("top", "## What bounds intake\n\nCPU, on both cores."), _block("end", "## A one-off run\n\n| a |")
    previous = "\n\n".join(["# Benchmarks", "old figures", top, "## Old table", "| x |", end, ""])
    report = render(RESULTS, kept_notes(previous))
    assert "old figures" not in report and "## Old table" not in report  # the old run's own figures go
    assert report.index("Targets at a glance") < report.index(top) < report.index("## Intake: reports per second")
    assert report.index("| 32 | 155.3 |") < report.index(end)
    assert kept_notes(report) == {"top": [top], "end": [end]}  # and the next run keeps them again


def test_a_report_without_notes_keeps_nothing() -> None:
    assert kept_notes("# Benchmarks\n\nfigures only\n") == {"top": [], "end": []}
    assert KEPT_END not in render(RESULTS, kept_notes(""))


@pytest.mark.parametrize(
    "previous",
    [
        f"{KEPT_BEGIN.format(where='top')}\nno end marker\n## Old table\n",  # a begin without its end
        f"{KEPT_BEGIN.format(where='middle')}\nsomewhere unknown\n{KEPT_END}\n",  # an unknown place
        f"{KEPT_BEGIN.format(where='top')}\none\n{KEPT_BEGIN.format(where='end')}\ntwo\n{KEPT_END}\n",  # nested
        f"notes\n{KEPT_END}\n",  # an end too many
    ],
)
def test_markers_that_do_not_pair_up_are_refused_rather_than_lost(previous: str) -> None:
    with pytest.raises(KeptNotesUnreadable):
        kept_notes(previous)


def test_windows_line_ends_and_trailing_spaces_after_a_marker_still_keep_the_block() -> None:
    previous = f"{KEPT_BEGIN.format(where='top')}  \r\nnote\r\n{KEPT_END}\r\n"
    assert kept_notes(previous)["top"] == [f"{KEPT_BEGIN.format(where='top')}  \r\nnote\r\n{KEPT_END}"]


def test_the_repositorys_report_has_its_issue_16_analysis_kept() -> None:
    from pathlib import Path

    kept = kept_notes((Path(__file__).parent.parent / "BENCHMARKS.md").read_text())
    assert any("What bounds intake" in block for block in kept["top"])
