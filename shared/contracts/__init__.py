"""Typed contracts between the services (issue #13, first step: the data of every event, CONTRACT §9)."""

from shared.contracts.events import (
    EVENT_TYPES,
    REJECTION_REASONS,
    TOPIC_SOURCES,
    EventContracts,
    EventRejected,
    contracts_for,
)

__all__ = [
    "EVENT_TYPES",
    "REJECTION_REASONS",
    "TOPIC_SOURCES",
    "EventContracts",
    "EventRejected",
    "contracts_for",
]
