"""The rule table, texts and URL rules, without I/O."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from services.notifications import domain

MIGRATION = Path(__file__).parents[2] / "services/notifications/migrations/versions/20261121_0001_initial.py"


def _migration_rules() -> list[tuple[object, ...]]:
    """The rule table after every migration: the initial SEED_RULES, later ADDED_RULES, readdressed by RULE_CHANGES."""
    found: list[tuple[object, ...]] = []
    changes: dict[tuple[object, object], object] = {}
    for path in sorted(MIGRATION.parent.glob("*.py")):
        spec = importlib.util.spec_from_file_location(path.stem, path)
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        found.extend(getattr(module, "SEED_RULES", []))
        found.extend(getattr(module, "ADDED_RULES", []))
        changes.update({(event, before): after for event, before, after in getattr(module, "RULE_CHANGES", [])})
    readdressed = []
    for e, a, k, r, s, c, cond, p in found:  # type: ignore[misc]
        k, r = changes.get((e, (k, r)), (k, r))  # type: ignore[misc]
        readdressed.append((e, a, k, r, s, c, cond, p))
    return readdressed


def test_seeded_rule_table_equals_the_code_defaults() -> None:
    seeded = {
        (e, a, k, r, s, tuple(c), repr(sorted(cond.items())), p)  # type: ignore[attr-defined]
        for e, a, k, r, s, c, cond, p in _migration_rules()
    }
    defaults = {
        (
            r.event_type,
            r.alert_type,
            r.recipient_kind,
            r.recipient_ref,
            r.severity,
            tuple(r.channels),
            repr(sorted(r.condition.items())),
            r.priority,
        )
        for r in domain.DEFAULT_RULES
    }
    assert seeded == defaults


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"risk_level": "high"}, ["case.high_risk"]),
        ({"risk_level": "low"}, ["case.new"]),
        ({"risk_level": None}, ["case.new"]),
    ],
)
def test_a_reported_case_raises_exactly_one_coordinator_alert(data: dict[str, str], expected: list[str]) -> None:
    raised = domain.alerts_for(domain.DEFAULT_RULES, "case.reported", data)
    assert [rule.alert_type for rule, _ in raised] == expected
    assert [recipient.key for _, recipient in raised] == ["role:coordinator"]


def test_risk_rising_to_high_alerts_but_staying_high_does_not() -> None:
    assert domain.alerts_for(
        domain.DEFAULT_RULES, "case.risk_assessed", {"risk_level": "high", "previous_risk_level": "medium"}
    )
    assert not domain.alerts_for(
        domain.DEFAULT_RULES, "case.risk_assessed", {"risk_level": "high", "previous_risk_level": "high"}
    )


def test_every_alert_type_has_both_languages() -> None:
    for rule in domain.DEFAULT_RULES:
        sq = domain.render(rule.alert_type, {"case_number": "X-1"}, "sq")
        en = domain.render(rule.alert_type, {"case_number": "X-1"}, "en")
        assert sq != en, rule.alert_type


@pytest.mark.parametrize(
    ("header", "language"),
    [
        (None, "sq"),
        ("", "sq"),
        ("en", "en"),
        ("en-US,en;q=0.9", "en"),
        ("sq,en;q=0.8", "sq"),
        ("de, en;q=0.5", "en"),
        ("en;q=0.2, sq;q=0.9", "sq"),
        ("fr", "sq"),
        ("en;q=abc", "sq"),
    ],
)
def test_accept_language_picks_english_only_when_preferred(header: str | None, language: str) -> None:
    assert domain.language_of(header) == language


@pytest.mark.parametrize(
    ("address", "environment", "refused"),
    [
        ("127.0.0.1", "test", False),
        ("10.0.0.5", "development", False),
        ("169.254.169.254", "test", True),
        ("127.0.0.1", "production", True),
        ("10.0.0.5", "production", True),
        ("::1", "production", True),
        ("::ffff:192.168.1.1", "production", True),
        ("93.184.216.34", "production", False),
    ],
)
def test_internal_addresses_are_refused_in_production(address: str, environment: str, refused: bool) -> None:
    if refused:
        with pytest.raises(domain.UnsafeUrl):
            domain.check_address(address, environment=environment, allow_listed=False)
    else:
        domain.check_address(address, environment=environment, allow_listed=False)
    if address == "169.254.169.254":  # cloud metadata: refused even for an allow-listed host (issue #11)
        with pytest.raises(domain.UnsafeUrl):
            domain.check_address(address, environment=environment, allow_listed=True)
    else:
        domain.check_address(address, environment=environment, allow_listed=True)


def test_allow_list_limits_webhook_hosts() -> None:
    assert domain.check_url("https://hooks.police.al/x", allowed_hosts=["*.police.al"]) == "hooks.police.al"
    for url in ("https://evil.example/x", "file:///etc/passwd", "https://user:pw@hooks.police.al/", "http:///x"):
        with pytest.raises(domain.UnsafeUrl):
            domain.check_url(url, allowed_hosts=["*.police.al"])


def test_institution_webhooks_see_only_events_naming_their_member() -> None:
    assert domain.concerns_member({"to_member_id": "m1"}, "m1")
    assert domain.concerns_member({"member_ids": ["m0", "m1"]}, "m1")
    assert domain.concerns_member({"actions": [{"responsible_member_id": "m1"}]}, "m1")
    assert not domain.concerns_member({"to_member_id": "m2", "case_id": "m1"}, "m1")


def test_backoff_grows_and_is_capped() -> None:
    assert all(0.5 <= domain.backoff_seconds(1, 1, 100) <= 1 for _ in range(50))
    assert all(4 <= domain.backoff_seconds(4, 1, 100) <= 8 for _ in range(50))
    assert domain.backoff_seconds(40, 1, 100) <= 100
