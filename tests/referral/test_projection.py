"""Referral's projection of shelter's facts (services/referral/projection.py), fed directly: a repeated or
late event leaves the row as the contract says (an upsert, a kept row, or one column updated)."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

from services.referral import projection
from services.referral.models import Placement, RentBonus, RentBonusPayment
from shared.contracts import events as contract
from shared.dispatch import Received
from shared.events import event_of
from tests.referral.direct import session_of
from tests.support import Stack, new_municipality


def _received(data: Any, municipality: str) -> Received[Any]:
    return Received(event_of(data, subject=str(data.case_id), municipality=municipality), data)


async def test_rent_bonus_payments_and_placements_keep_what_a_redelivery_must_not_change(stack: Stack) -> None:
    m, case_id, application_id, payment_id = new_municipality(), uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    payment = {"application_id": application_id, "payment_id": payment_id, "case_id": case_id, "month": "2026-03"}
    decided = {"application_id": application_id, "case_id": case_id, "approved": True, "months": 3}
    placement = {"placement_id": uuid.uuid4(), "case_id": case_id, "shelter_id": uuid.uuid4(), "adults": 1}
    async with session_of(stack) as session, session.begin():
        await projection.on_rent_bonus_decided(
            session, _received(contract.RentBonusDecided(**decided, monthly_amount="100.00"), m)
        )
        # A second decision replaces the first (every projected column).
        await projection.on_rent_bonus_decided(
            session, _received(contract.RentBonusDecided(**decided, monthly_amount="120.00"), m)
        )
        await projection.on_payment_due(session, _received(contract.RentBonusPaymentDue(**payment, amount="120"), m))
        paid = contract.RentBonusPaymentPaid(**payment, amount="120")
        await projection.on_payment_paid(session, _received(paid, m))
        # A redelivered `payment_due` after the payment was paid keeps it paid; a paid one changes only paid_at.
        await projection.on_payment_due(session, _received(contract.RentBonusPaymentDue(**payment, amount="999"), m))
        await projection.on_payment_paid(session, _received(contract.RentBonusPaymentPaid(**payment, amount="999"), m))
        await projection.on_placement_started(session, _received(contract.PlacementStarted(**placement, children=2), m))
        await projection.on_placement_started(session, _received(contract.PlacementStarted(**placement, children=5), m))
    async with session_of(stack) as session:
        bonus = await session.get(RentBonus, application_id)
        row = await session.get(RentBonusPayment, payment_id)
        placed = await session.get(Placement, placement["placement_id"])
    assert bonus is not None and bonus.monthly_amount == Decimal("120.00") and bonus.months == 3
    assert row is not None and row.amount == Decimal("120") and row.paid_at is not None
    assert placed is not None and placed.children == 2 and placed.municipality == m
