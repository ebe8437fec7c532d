"""Referral's consumer: one registry `{model: handler}` for intake's and shelter's topics.

Intake's cases are projected (`projection.py`) and routed (`routing.py`): a report, a risk rise, a
transfer in (`transfers.py`); a withdrawal of consent ends the referrals it no longer allows; an
erasure clears the case's free text (`erasure.py`). Shelter's facts are projected for plans and reports.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from services.referral import domain, erasure, projection, routing, transfers
from services.referral.config import ReferralConfig
from services.referral.models import CaseFact
from shared.contracts import events as contract
from shared.dispatch import EventHandlers, Received
from shared.settings import Settings


class CaseConsumer:
    """The handlers that need the settings (publishing, the routing profile) and the service's config."""

    def __init__(self, settings: Settings, config: ReferralConfig) -> None:
        self.settings = settings
        self.config = config

    async def case_reported(self, session: AsyncSession, event: Received[contract.CaseReported]) -> None:
        case, fresh, alone = await projection.project_case_reported(session, event)
        await routing.route(
            session, self.settings, self.config, case, event, new_case=fresh, defer_referrals=fresh and alone
        )

    async def risk_assessed(self, session: AsyncSession, event: Received[contract.CaseRiskAssessed]) -> None:
        case = await session.get(CaseFact, event.data.case_id, with_for_update=True)
        if case is None:
            return  # not reported here (yet): nothing to route
        level = str(event.data.risk_level)
        rose = domain.risk_rose(case.risk_level, level)
        case.risk_level = level
        await session.flush()
        if rose:
            await routing.route(session, self.settings, self.config, case, event)

    async def consent_changed(self, session: AsyncSession, event: Received[contract.ConsentChanged]) -> None:
        case = await session.get(CaseFact, event.data.case_id, with_for_update=True)
        if case is None:
            return
        case.consent_share_with = projection.codes(event.data.share_with)
        withdrawn = set(projection.codes(event.data.withdrawn)) - set(case.consent_share_with)
        if withdrawn:
            await session.flush()
            await routing.end_withdrawn_referrals(session, self.settings, case, withdrawn)
        await session.flush()

    async def case_transferred(self, session: AsyncSession, event: Received[contract.CaseTransferred]) -> None:
        await transfers.on_case_transferred(self.settings, self.config, session, event.envelope)

    def registry(self) -> EventHandlers:
        return EventHandlers({
            contract.CaseReported: self.case_reported,
            contract.CaseRiskAssessed: self.risk_assessed,
            contract.CaseClosed: projection.on_case_closed,
            contract.CaseReopened: projection.on_case_reopened,
            contract.ConsentChanged: self.consent_changed,
            contract.ProtectionOrderRecorded: projection.on_protection_order,
            contract.ShelterAvailabilityChanged: projection.on_shelter,
            contract.ShelterFull: projection.on_shelter,
            contract.PlacementStarted: projection.on_placement_started,
            contract.PlacementEnded: projection.on_placement_ended,
            contract.RentBonusDecided: projection.on_rent_bonus_decided,
            contract.RentBonusPaymentDue: projection.on_payment_due,
            contract.RentBonusPaymentPaid: projection.on_payment_paid,
            contract.CaseTransferred: self.case_transferred,
            contract.CaseAnonymised: on_case_anonymised,
            contract.CaseLinked: projection.on_links_changed,
            contract.CaseUnlinked: projection.on_links_changed,
            contract.CaseFactsCorrected: projection.on_facts_corrected,
        }, prepare=projection.project_reports)


async def on_case_anonymised(session: AsyncSession, event: Received[contract.CaseAnonymised]) -> None:
    await erasure.on_case_anonymised(session, event.envelope)


def make_handler(settings: Settings, config: ReferralConfig) -> EventHandlers:
    return CaseConsumer(settings, config).registry()


# Intake's cases and shelter's facts.
CONSUMED_TOPICS = (contract.INTAKE_TOPIC, contract.SHELTER_TOPIC)
