"""Typed contracts between the services (issue #13): one model per event type (CONTRACT §9), the topics."""

from shared.contracts.events import (
    ALL_TOPICS,
    EVENT_TYPES,
    INTAKE_TOPIC,
    NOTIFICATIONS_TOPIC,
    REFERRAL_TOPIC,
    REJECTION_REASONS,
    SCHEMA_VERSION,
    SHELTER_TOPIC,
    TOPIC_SOURCES,
    EventContracts,
    EventData,
    EventRejected,
    contracts_for,
    validate_data,
)
from shared.contracts.instant import Instant, parse_instant

__all__ = [
    "ALL_TOPICS",
    "EVENT_TYPES",
    "INTAKE_TOPIC",
    "NOTIFICATIONS_TOPIC",
    "REFERRAL_TOPIC",
    "REJECTION_REASONS",
    "SCHEMA_VERSION",
    "SHELTER_TOPIC",
    "TOPIC_SOURCES",
    "EventContracts",
    "EventData",
    "EventRejected",
    "Instant",
    "contracts_for",
    "parse_instant",
    "validate_data",
]
