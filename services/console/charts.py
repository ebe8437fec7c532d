"""Charts as SVG drawn on the server: readable without JavaScript, each with its numbers as a table too."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from markupsafe import Markup, escape

from services.console.i18n import Translator

WIDTH = 560
BAR = 22
GAP = 8
LABEL = 170
# Dark blue on white: contrast above 7:1.
FILL = "#1f4e79"


@dataclass
class Chart:
    title: str
    rows: list[tuple[str, int | None]]

    @property
    def svg(self) -> Markup:
        return bar_chart(self.title, self.rows)


def bar_chart(title: str, rows: list[tuple[str, int | None]]) -> Markup:
    """A horizontal bar chart; a suppressed (None) count is drawn as no bar and labelled as suppressed."""
    height = max(1, len(rows)) * (BAR + GAP) + GAP
    peak = max([value for _, value in rows if value] or [1])
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {WIDTH} {height}" '
        f'width="100%" role="img" aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
    ]
    span = WIDTH - LABEL - 60
    for index, (label, value) in enumerate(rows):
        y = GAP + index * (BAR + GAP)
        width = 0 if not value else max(2, round(span * value / peak))
        shown = "–" if value is None else str(value)
        parts.append(
            f'<text x="{LABEL - 8}" y="{y + BAR * 0.7:.0f}" text-anchor="end" font-size="13" fill="#111">'
            f"{escape(label)}</text>"
            f'<rect x="{LABEL}" y="{y}" width="{width}" height="{BAR}" fill="{FILL}"/>'
            f'<text x="{LABEL + width + 6}" y="{y + BAR * 0.7:.0f}" font-size="13" fill="#111">{shown}</text>'
        )
    parts.append("</svg>")
    # Every text in it went through escape() above.
    return Markup("".join(parts))  # noqa: S704


def _rows(t: Translator, prefix: str, breakdown: Any) -> list[tuple[str, int | None]]:
    if not isinstance(breakdown, dict):
        return []
    return [(t.code(prefix, key), value if isinstance(value, int) else None) for key, value in breakdown.items()]


def summary_charts(summary: dict[str, Any], t: Translator, months: list[tuple[str, int | None]] | None = None
                   ) -> list[Chart]:
    cases = summary.get("cases") or {}
    referrals = summary.get("referrals") or {}
    charts = []
    if months:
        charts.append(Chart(t.gettext("Cases by month"), months))
    charts += [
        Chart(t.gettext("Cases by sex"), _rows(t, "sex", cases.get("by_sex"))),
        Chart(t.gettext("Cases by age group"), _rows(t, "age", cases.get("by_age_group"))),
        Chart(t.gettext("Cases by ethnicity"), _rows(t, "ethnicity", cases.get("by_ethnicity"))),
        Chart(t.gettext("Cases by risk level"), _rows(t, "risk", cases.get("by_risk_level"))),
        Chart(t.gettext("Referrals by member kind"), _rows(t, "kind", referrals.get("by_member_kind"))),
        Chart(t.gettext("Referrals by status"), _rows(t, "status", referrals.get("by_status"))),
    ]
    breaches = referrals.get("sla_breaches")
    charts.append(Chart(t.gettext("Acknowledgement deadlines missed"),
                        [(t.gettext("Referrals"), breaches if isinstance(breaches, int) else None)]))
    return [chart for chart in charts if chart.rows]
