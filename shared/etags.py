"""Optimistic concurrency over HTTP: weak entity tags and the If-Match check (RFC 9110 §8.8.3, §13.1.1)."""

from __future__ import annotations

import re

_TAG = re.compile(r'^(?:W/)?"([^"]*)"$')


def weak_etag(opaque: str) -> str:
    """The ETag header value of a version (`W/"<opaque>"`)."""
    return f'W/"{opaque}"'


def if_match_allows(header: str, opaque: str) -> bool:
    """True when an If-Match header names the current version `opaque` (weak comparison), or is `*`."""
    for part in header.split(","):
        tag = part.strip()
        if tag == "*":
            return True
        match = _TAG.match(tag)
        if match and match.group(1) == opaque:
            return True
    return False
