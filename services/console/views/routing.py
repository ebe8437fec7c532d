"""The coordinator's routing rules (DOMAIN.md: rules are data, per municipality): add a rule, change one,
or take one out of use. The referral API replaces the whole table (`PUT /v1/routing-rules`), so each
change reads the current table, changes that one rule and puts the table back."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, Response

from services.console.deps import Caller, PostedForm, SignedIn, require
from services.console.upstream import ApiError
from services.console.views.common import URGENCIES, shown_status
from services.console.web import api_details, api_message, redirect, render

router = APIRouter(include_in_schema=False)

KINDS = ("police", "social_services", "child_protection", "health", "education", "employment", "legal_aid", "ngo",
         "shelter", "housing", "prosecution", "court")
SERVICES = ("shelter", "legal_aid", "health", "psychological", "economic_aid", "employment", "housing", "childcare",
            "protection_order", *[k for k in KINDS if k not in ("shelter", "health", "employment", "legal_aid",
                                                                 "housing")])


async def _rules(caller: Caller) -> dict[str, Any]:
    """The table as the API has it now, with its ETag (`etag`), which the PUT sends back as If-Match."""
    answer = await caller.api.call("referral", "GET", "/v1/routing-rules", caller.token, language=caller.lang)
    data = answer.data if isinstance(answer.data, dict) else {"rules": [], "is_default": True}
    return {**data, "etag": answer.headers.get("etag", "")}


def digest(rule: dict[str, Any] | None) -> str:
    """A rule's fingerprint as the form showed it: a save that finds the rule changed meanwhile refuses."""
    canonical = json.dumps(rule or {}, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


@router.get("/routing-rules", response_class=HTMLResponse)
async def routing_rules_page(caller: SignedIn) -> Response:
    require(caller, "coordinator")
    done = caller.request.query_params.get("done")
    notices = {"saved": caller.t.gettext("The rule is saved."),
               "removed": caller.t.gettext("The rule is no longer used.")}
    return await _page(caller, notice=notices.get(done or ""))


async def _page(caller: Caller, status: int = 200, **extra: Any) -> Response:
    table = await _rules(caller)
    rules = [r for r in table.get("rules") or [] if isinstance(r, dict)]
    return render(caller.request, "routing.html", status=status, rules=rules, is_default=table.get("is_default"),
                  kinds=KINDS, services=SERVICES, urgencies=URGENCIES,
                  conditions={r.get("name"): _conditions(r) for r in rules},
                  digests={r.get("name"): digest(r) for r in rules},
                  **extra)


def _conditions(rule: dict[str, Any]) -> str:
    """A rule's `when` as the form shows it: JSON, without the tests a condition leaves out."""
    when = [{k: v for k, v in c.items() if v is not None} for c in rule.get("when") or [] if isinstance(c, dict)]
    return json.dumps(when or [{}], ensure_ascii=False)


def _rule_from(form: Any) -> dict[str, Any]:
    """The rule as the form states it; `when` is a JSON list of conditions (ValueError when it is not)."""
    when = json.loads(str(form.get("when") or "[{}]"))
    if not isinstance(when, list):
        raise ValueError("not a list")
    rule: dict[str, Any] = {
        "name": str(form.get("name") or "").strip(),
        "refer_to": str(form.get("refer_to") or ""),
        "urgency": str(form.get("urgency") or ""),
        "when": when,
    }
    for optional in ("urgency_if_high_risk", "service"):
        value = str(form.get(optional) or "")
        if value:
            rule[optional] = value
    return rule


async def _put(posted: PostedForm, table: dict[str, Any], rules: list[dict[str, Any]], done: str) -> Response:
    """Put the table back over the one just read (If-Match: a change in between is a 412, never lost)."""
    headers = {"If-Match": table["etag"]} if table.get("etag") else None
    try:
        await posted.api.call("referral", "PUT", "/v1/routing-rules", posted.token, language=posted.lang,
                              json={"rules": rules}, headers=headers)
    except ApiError as error:
        return await _page(posted, shown_status(error), error=api_message(posted.t, error),
                           details=api_details(error))
    return redirect(f"/routing-rules?done={done}")


@router.post("/routing-rules/save")
async def save_rule(posted: PostedForm) -> Response:
    """A new rule (no `original`) is added at the end; a changed one keeps its place in the table."""
    require(posted, "coordinator")
    try:
        rule = _rule_from(posted.form)
    except ValueError:
        return await _page(posted, 422, error=posted.t.gettext(
            "The conditions must be a JSON list of conditions, like the ones shown."))
    original = str(posted.form.get("original") or "")
    table = await _rules(posted)
    rules = [r for r in table.get("rules") or [] if isinstance(r, dict)]
    names = [r.get("name") for r in rules]
    if original and original in names and _unchanged(posted, rules[names.index(original)]):
        rules[names.index(original)] = rule
    elif original:
        return await _page(posted, 409, error=posted.t.gettext("The rule was changed meanwhile; nothing was saved."))
    else:
        rules.append(rule)
    return await _put(posted, table, rules, "saved")


def _unchanged(posted: PostedForm, current: dict[str, Any]) -> bool:
    """The rule is still as the form showed it (a form without a fingerprint is taken as it comes)."""
    shown = str(posted.form.get("digest") or "")
    return not shown or shown == digest(current)


@router.post("/routing-rules/remove")
async def remove_rule(posted: PostedForm) -> Response:
    """Take a rule out of use: the table is put back without it (the API keeps no inactive rules)."""
    require(posted, "coordinator")
    original = str(posted.form.get("original") or "")
    table = await _rules(posted)
    rules = [r for r in table.get("rules") or [] if isinstance(r, dict)]
    kept = [r for r in rules if r.get("name") != original]
    gone = [r for r in rules if r.get("name") == original]
    if len(kept) == len(rules) or not _unchanged(posted, gone[0]):
        return await _page(posted, 409, error=posted.t.gettext("The rule was changed meanwhile; nothing was saved."))
    return await _put(posted, table, kept, "removed")
