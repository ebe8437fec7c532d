"""The survivor's file as a printable PDF (fpdf2): the JSON document of survivor_file.py, section by
section, one `field: value` line per fact. Core fonts cover Latin-1 (Albanian's ë and ç included);
any other character prints as `?` rather than failing the answer."""

from __future__ import annotations

import json
from typing import Any

from fpdf import FPDF

TITLES = {
    "case": "Case and survivor", "identity_history": "Corrections of identity", "audit": "Who read or changed it",
    "referrals": "Referrals", "routing": "Routing decisions", "plan": "Case plan", "placements": "Shelter placements",
    "rent_bonus": "Rent bonus", "alerts": "Alerts sent", "incomplete": "Parts not available",
}


def _latin1(text: str) -> str:
    return text.encode("latin-1", "replace").decode("latin-1")


def _lines(value: Any, prefix: str = "") -> list[str]:
    """Flatten a JSON value into `path: value` lines."""
    if isinstance(value, dict):
        out: list[str] = []
        for key, item in value.items():
            out.extend(_lines(item, f"{prefix}{key}."))
        return out
    if isinstance(value, list):
        if all(not isinstance(item, dict | list) for item in value):
            return [f"{prefix.rstrip('.')}: {', '.join(str(v) for v in value)}"]
        out = []
        for index, item in enumerate(value, start=1):
            out.extend(_lines(item, f"{prefix}{index}."))
        return out
    shown = "" if value is None else (json.dumps(value) if isinstance(value, bool) else str(value))
    return [f"{prefix.rstrip('.')}: {shown}"]


def render(doc: dict[str, Any]) -> bytes:
    pdf = FPDF(format="A4")
    pdf.set_auto_page_break(auto=True, margin=15)
    pdf.add_page()
    pdf.set_font("Helvetica", "B", 16)
    number = doc.get("case", {}).get("case_number", "")
    pdf.multi_cell(0, 9, _latin1(f"Survivor's file - {number}"), new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", size=9)
    pdf.multi_cell(0, 5, _latin1(f"Generated {doc.get('generated_at', '')}; complete: {doc.get('complete')}"),
                   new_x="LMARGIN", new_y="NEXT")
    for section, title in TITLES.items():
        if section not in doc or (section == "incomplete" and not doc[section]):
            continue
        pdf.ln(3)
        pdf.set_font("Helvetica", "B", 12)
        pdf.multi_cell(0, 7, _latin1(title), new_x="LMARGIN", new_y="NEXT")
        pdf.set_font("Helvetica", size=9)
        for line in _lines(doc[section]) or ["(none)"]:
            pdf.multi_cell(0, 4.5, _latin1(line), new_x="LMARGIN", new_y="NEXT")
    return bytes(pdf.output())
