"""The risk screen of DOMAIN.md, per municipality, with its history."""

from __future__ import annotations

from typing import Any

import pytest

from tests.intake.conftest import reported
from tests.support import Stack, new_municipality

NON_RED = [
    "violence_escalating",
    "pregnant_or_newborn",
    "separation_recent_or_planned",
    "perpetrator_weapon_access",
    "threats_to_children",
    "perpetrator_substance_abuse",
    "perpetrator_prior_violence",
    "protection_order_breached",
]


def yes(n: int) -> dict[str, bool]:
    return {qid: True for qid in NON_RED[:n]}


@pytest.mark.parametrize(
    ("answers", "level", "yes_count", "red_flags"),
    [
        ({}, "low", 0, []),
        (yes(3), "low", 3, []),
        (yes(4), "medium", 4, []),
        (yes(7), "medium", 7, []),
        (yes(8), "high", 8, []),
        ({"strangulation": True, "threats_to_kill": False}, "high", 1, ["strangulation"]),
        (
            {"afraid_of_being_killed": True, "weapon_used_or_threatened": True},
            "high",
            2,
            ["weapon_used_or_threatened", "afraid_of_being_killed"],
        ),
    ],
)
async def test_assessment_scores_by_red_flags_and_yes_count(
    intake: Stack, answers: dict[str, bool], level: str, yes_count: int, red_flags: list[str]
) -> None:
    municipality = new_municipality()
    case = await reported(intake, municipality)
    response = await intake.intake.post(
        f"/v1/cases/{case['id']}/risk-assessments",
        json={"risk_answers": answers},
        headers=intake.auth("coordinator", municipality),
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert (body["risk_level"], body["yes_count"], body["red_flags"]) == (level, yes_count, red_flags)


async def test_report_with_a_red_flag_is_high_risk(intake: Stack) -> None:
    case = await reported(intake, new_municipality(), risk_answers={"threats_to_kill": True})
    assert case["risk_level"] == "high"


async def test_professional_judgement_raises_but_never_lowers(intake: Stack) -> None:
    municipality = new_municipality()
    case = await reported(intake, municipality)
    url = f"/v1/cases/{case['id']}/risk-assessments"
    headers = intake.auth("coordinator", municipality)
    raised = await intake.intake.post(
        url, json={"risk_answers": yes(1), "professional_judgement": "high"}, headers=headers
    )
    assert raised.json()["risk_level"] == "high"
    kept = await intake.intake.post(
        url, json={"risk_answers": {"strangulation": True}, "professional_judgement": "low"}, headers=headers
    )
    assert kept.json()["risk_level"] == "high"


async def test_unknown_answer_id_is_422(intake: Stack) -> None:
    municipality = new_municipality()
    case = await reported(intake, municipality)
    response = await intake.intake.post(
        f"/v1/cases/{case['id']}/risk-assessments",
        json={"risk_answers": {"moon_phase": True}},
        headers=intake.auth("coordinator", municipality),
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"] == ["body", "risk_answers", "moon_phase"]


async def test_reassessments_are_kept_as_history_and_set_the_case_level(intake: Stack) -> None:
    municipality = new_municipality()
    case = await reported(intake, municipality, risk_answers={"strangulation": False})
    headers = intake.auth("police", municipality, member_id="m-police")
    # Rises by the reporter; the lowering by the coordinator (only the coordinator lowers, CONTRACT §2).
    coordinator = intake.auth("coordinator", municipality)
    for answers, by in ((yes(5), headers), ({"threats_to_kill": True}, headers), ({}, coordinator)):
        response = await intake.intake.post(
            f"/v1/cases/{case['id']}/risk-assessments", json={"risk_answers": answers}, headers=by
        )
        assert response.status_code == 201
    body = (await intake.intake.get(f"/v1/cases/{case['id']}", headers=headers)).json()
    assert [a["risk_level"] for a in body["risk_assessments"]] == ["low", "medium", "high", "low"]
    assert body["risk_level"] == "low"


async def test_municipality_screen_config_changes_ids_and_thresholds(intake: Stack) -> None:
    municipality = new_municipality()
    coordinator = intake.auth("coordinator", municipality)
    default = await intake.intake.get("/v1/risk-screen", headers=coordinator)
    assert default.json()["is_default"] is True and len(default.json()["questions"]) == 16
    screen: dict[str, Any] = {
        "questions": [
            {"id": "knife_in_house", "red_flag": True},
            {"id": "aa", "red_flag": False},
            {"id": "bb", "red_flag": False},
        ],
        "high_yes_count": 3,
        "medium_yes_count": 2,
    }
    put = await intake.intake.put("/v1/risk-screen", json=screen, headers=coordinator)
    assert put.status_code == 200, put.text
    police = intake.auth("police", municipality)
    assert (await intake.intake.put("/v1/risk-screen", json=screen, headers=police)).status_code == 403
    case = await reported(intake, municipality, risk_answers={"aa": True, "bb": True})
    assert case["risk_level"] == "medium"
    bad = await intake.intake.post(
        "/v1/cases", json={**_minimal(municipality), "risk_answers": {"threats_to_kill": True}}, headers=police
    )
    assert bad.status_code == 422


def _minimal(municipality: str) -> dict[str, Any]:
    return {
        "municipality": municipality,
        "source": "police",
        "survivor": {"first_name": "Drita", "last_name": "Kola", "sex": "female"},
    }
