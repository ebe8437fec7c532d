"""Text types shared by request and response models: what a write accepts, a read can always show.

A value typed with these passes the same validation on the way in (request bodies) and on the way
out (response models), so a stored value can never make a later answer fail (CONTRACT §3).
Refused everywhere: control characters (C0, DEL, C1), unpaired surrogates, private-use and
unassigned code points, line and paragraph separators; free text keeps tab and newline.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Annotated

from pydantic import AfterValidator, Field

# Unicode categories never accepted in stored text: control, surrogate, private use, unassigned,
# line and paragraph separators.
_REFUSED = frozenset({"Cc", "Cs", "Co", "Cn", "Zl", "Zp"})
_MULTILINE_ALLOWED = frozenset("\n\t")

# A municipality code: the slug intake checks on reports.
SLUG_PATTERN = r"^[a-z][a-z0-9-]{1,62}$"
EMAIL_PATTERN = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"
PHONE_PATTERN = r"^\+?[0-9()\- ]{3,40}$"
PHONE_MAX_DIGITS = 15  # E.164


def printable_problem(value: str, *, multiline: bool = False) -> str | None:
    """Why `value` may not be stored as text, or None when it may."""
    for char in value:
        if multiline and char in _MULTILINE_ALLOWED:
            continue
        if unicodedata.category(char) in _REFUSED:
            return f"contains a control or unassigned character (U+{ord(char):04X})"
    return None


def _line(value: str) -> str:
    problem = printable_problem(value)
    if problem:
        raise ValueError(problem)
    return value


def _multiline(value: str) -> str:
    problem = printable_problem(value, multiline=True)
    if problem:
        raise ValueError(problem)
    return value


def _phone(value: str) -> str:
    digits = sum(ch.isdigit() for ch in value)
    if not 3 <= digits <= PHONE_MAX_DIGITS:
        raise ValueError(f"a phone number has 3 to {PHONE_MAX_DIGITS} digits")
    return value


Line = Annotated[str, AfterValidator(_line)]
"""One line of printable text (names, codes)."""

FreeText = Annotated[str, AfterValidator(_multiline)]
"""Printable text that may hold newlines and tabs (notes, reasons, minutes)."""

Slug = Annotated[str, Field(pattern=SLUG_PATTERN)]

Email = Annotated[str, Field(max_length=254, pattern=EMAIL_PATTERN), AfterValidator(_line)]
Phone = Annotated[str, Field(max_length=40, pattern=PHONE_PATTERN), AfterValidator(_line), AfterValidator(_phone)]


def is_slug(value: str) -> bool:
    return re.fullmatch(SLUG_PATTERN, value) is not None


__all__ = ["SLUG_PATTERN", "Email", "FreeText", "Line", "Phone", "Slug", "is_slug", "printable_problem"]
