"""The notification rules: which event alerts whom, how loudly, in which words. Pure, no I/O."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import random
import secrets
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal
from urllib.parse import urlsplit

from shared import profiles
from shared.contracts import events as ev

Severity = Literal["info", "warning", "critical"]
Channel = Literal["inbox", "email"]
RecipientKind = Literal["role", "member", "shelter", "user"]
Language = profiles.Language

DELIVERY_STATES = ("pending", "succeeded", "dead", "cancelled")

# Events this service publishes itself (mkr.notifications.events); it consumes them too.
PROTECTION_ORDER_EXPIRING = ev.ProtectionOrderExpiring.TYPE
NO_FREE_BED = ev.NoFreeBed.TYPE
NOTIFICATION_FAILED = ev.NotificationFailed.TYPE
TRANSFER_OVERDUE = ev.TransferOverdue.TYPE

# What a subscription may name in `event_types` (CONTRACT §9): every event type of the contract, so a new
# type is subscribable the day it is born (tests/notifications/test_subscribable_types.py). The data of
# every event is coded facts only, so nothing here widens what a webhook may carry.
SUBSCRIBABLE_EVENT_TYPES = frozenset(ev.EVENT_TYPES)


# Alert parameters copied from event data: coded facts and case numbers only, never identities.
PARAMETER_FIELDS = (
    "case_number",
    "risk_level",
    "previous_risk_level",
    "proposed_risk_level",
    "assessed_by_role",
    "urgency",
    "service",
    "to_member_kind",
    "ack_due_at",
    "due_date",
    "expires_at",
    "kind",
    "missing_kind",
    "month",
    "amount",
    "last_month",
    "capacity",
    "free_beds",
    "event_type",
    "channel",
    "attempts",
    "shelters",
)


@dataclass(frozen=True)
class AlertRule:
    """One row of the rule table: an event (matching `condition`) alerts one recipient."""

    event_type: str
    alert_type: str
    recipient_kind: RecipientKind
    # role name for "role", the event data field holding the id for "member"/"shelter", a sub for "user".
    recipient_ref: str
    severity: Severity
    channels: tuple[Channel, ...] = ("inbox",)
    # {field: {"in": [...]}} or {field: {"not_in": [...]}} over the event's data.
    condition: Mapping[str, Mapping[str, list[str]]] = field(default_factory=dict)
    priority: int = 100

    def matches(self, data: Mapping[str, Any]) -> bool:
        for name, test in self.condition.items():
            value = data.get(name)
            value = None if value is None else str(value)
            if "in" in test and value not in test["in"]:
                return False
            if "not_in" in test and value in test["not_in"]:
                return False
        return True


HIGH = {"risk_level": {"in": ["high"]}}
EMERGENCY = {"urgency": {"in": ["emergency"]}}
NOT_EMERGENCY = {"urgency": {"not_in": ["emergency"]}}

DEFAULT_RULES: tuple[AlertRule, ...] = (
    AlertRule(ev.CaseReported.TYPE, "case.high_risk", "role", "coordinator", "critical", condition=HIGH, priority=10),
    # Every other new case still reaches the coordinator, quietly.
    AlertRule(
        ev.CaseReported.TYPE,
        "case.new",
        "role",
        "coordinator",
        "info",
        condition={"risk_level": {"not_in": ["high"]}},
        priority=20,
    ),
    AlertRule(
        ev.CaseRiskAssessed.TYPE,
        "case.high_risk",
        "role",
        "coordinator",
        "critical",
        condition={**HIGH, "previous_risk_level": {"not_in": ["high"]}},
        priority=10,
    ),
    # A reassessment that would have lowered the level (by anyone but the coordinator): review it.
    AlertRule(ev.RiskReviewRequested.TYPE, "case.risk_review", "role", "coordinator", "warning", priority=10),
    AlertRule(
        ev.ReferralCreated.TYPE, "referral.new", "member", "to_member_id", "critical", ("inbox", "email"), EMERGENCY, 10
    ),
    AlertRule(
        ev.ReferralCreated.TYPE, "referral.new", "member", "to_member_id", "info", ("inbox", "email"), NOT_EMERGENCY, 20
    ),
    AlertRule(ev.ReferralSlaBreached.TYPE, "referral.sla_breached", "role", "coordinator", "critical", priority=10),
    AlertRule(
        ev.ReferralSlaBreached.TYPE,
        "referral.sla_breached",
        "member",
        "to_member_id",
        "critical",
        ("inbox", "email"),
        priority=10,
    ),
    AlertRule(PROTECTION_ORDER_EXPIRING, "protection_order.expiring", "role", "coordinator", "warning", priority=10),
    # The police member involved in the case (referred to, else the reporter), not every police user.
    AlertRule(
        PROTECTION_ORDER_EXPIRING, "protection_order.expiring", "member", "police_member_id", "warning", priority=10
    ),
    AlertRule(ev.PlanActionOverdue.TYPE, "plan.action_overdue", "role", "coordinator", "warning", priority=10),
    AlertRule(
        ev.PlanActionOverdue.TYPE,
        "plan.action_overdue",
        "member",
        "responsible_member_id",
        "warning",
        ("inbox", "email"),
        priority=10,
    ),
    AlertRule(ev.ShelterFull.TYPE, "shelter.full", "role", "coordinator", "warning", priority=10),
    AlertRule(NO_FREE_BED, "shelter.none_available", "role", "coordinator", "critical", priority=10),
    AlertRule(ev.RentBonusEnding.TYPE, "rent_bonus.ending", "role", "housing_officer", "info", priority=10),
    AlertRule(ev.RentBonusEnding.TYPE, "rent_bonus.ending", "role", "coordinator", "info", priority=10),
    AlertRule(ev.RentBonusPaymentDue.TYPE, "rent_bonus.payment_due", "role", "housing_officer", "warning", priority=10),
    AlertRule(ev.RentBonusPaymentDue.TYPE, "rent_bonus.payment_due", "role", "coordinator", "warning", priority=10),
    AlertRule(ev.MechanismGap.TYPE, "mechanism.gap", "role", "coordinator", "warning", priority=10),
    AlertRule(NOTIFICATION_FAILED, "notification.failed", "role", "coordinator", "warning", priority=10),
)


@dataclass(frozen=True)
class Recipient:
    """Whom one alert is addressed to (exactly one of the four)."""

    role: str | None = None
    member_id: str | None = None
    shelter_id: str | None = None
    sub: str | None = None

    @property
    def key(self) -> str:
        for kind in ("role", "member_id", "shelter_id", "sub"):
            value = getattr(self, kind)
            if value:
                return f"{kind}:{value}"
        return ""


def recipient_of(rule: AlertRule, data: Mapping[str, Any]) -> Recipient | None:
    """The rule's addressee for this event, or None when the event does not name one."""
    if rule.recipient_kind == "role":
        return Recipient(role=rule.recipient_ref)
    if rule.recipient_kind == "user":
        return Recipient(sub=rule.recipient_ref)
    value = data.get(rule.recipient_ref)
    if not value:
        return None
    if rule.recipient_kind == "member":
        return Recipient(member_id=str(value))
    return Recipient(shelter_id=str(value))


def alerts_for(
    rules: Iterable[AlertRule], event_type: str, data: Mapping[str, Any]
) -> list[tuple[AlertRule, Recipient]]:
    """Each (rule, recipient) the event raises: at most one alert per alert type and recipient."""
    chosen: dict[tuple[str, str], tuple[AlertRule, Recipient]] = {}
    for rule in sorted(rules, key=lambda r: r.priority):
        if rule.event_type != event_type or not rule.matches(data):
            continue
        recipient = recipient_of(rule, data)
        if recipient is None:
            continue
        chosen.setdefault((rule.alert_type, recipient.key), (rule, recipient))
    return list(chosen.values())


def alert_parameters(data: Mapping[str, Any]) -> dict[str, Any]:
    return {name: data[name] for name in PARAMETER_FIELDS if data.get(name) is not None}


def derived_event_id(*parts: str) -> uuid.UUID:
    """A stable id for an event this service derives (raised once, whichever replica raises it)."""
    return uuid.uuid5(uuid.NAMESPACE_URL, "mkr:notifications:" + ":".join(parts))


# --- texts -----------------------------------------------------------------------------------
# The words are data of the country profile (shared/profiles: texts/<language>.toml, the profile's names of
# orders and member kinds); `ALBANIA`, the default profile, is what callers without one get.

ALBANIA = profiles.load("albania")


class _Blank(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return "–"


def _localize(value: Any, words: Mapping[str, str]) -> str:
    if isinstance(value, str):
        if len(value) >= 16 and value[4:5] == "-" and "T" in value:
            try:
                return datetime.fromisoformat(value).strftime("%Y-%m-%d %H:%M %Z").strip()
            except ValueError:
                return value
        return words.get(value, value)
    return str(value)


def render(
    alert_type: str, params: Mapping[str, Any], language: Language, profile: profiles.Profile = ALBANIA
) -> tuple[str, str]:
    """The alert's title and body in the language (one of the profile's), from its stored type and parameters."""
    texts = profile.texts[language]
    template = texts.alerts.get(alert_type)
    if template is None:
        number = params.get("case_number")
        title = texts.unknown_title.format(type=alert_type)
        return title, (f"{title} ({number})" if number else title)
    words = profile.words(language)
    # A role (`assessed_by_role`) is not an institution: it is shown as its code, as before profiles;
    # member kinds and orders take the profile's names.
    values = _Blank({
        k: _localize(v, texts.vocabulary if k.endswith("_role") else words)
        for k, v in {"currency": profile.currency, **params}.items()
    })
    return template["title"].format_map(values), template["body"].format_map(values)


def language_of(accept_language: str | None, profile: profiles.Profile = ALBANIA) -> Language:
    """The profile's language the caller prefers most in Accept-Language, else the profile's first."""
    best: tuple[float, Language] | None = None
    for index, part in enumerate((accept_language or "").split(",")):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        if params.strip().startswith("q="):
            try:
                quality = float(params.strip()[2:])
            except ValueError:
                quality = 0.0
        primary = tag.strip().lower().split("-")[0]
        offered = next((language for language in profile.languages if language == primary), None)
        if offered is not None and quality > 0:
            candidate = (quality - index * 1e-6, offered)
            if best is None or candidate[0] > best[0]:
                best = candidate
    return best[1] if best else profile.language


# --- webhooks ----------------------------------------------------------------------------------


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


WHSEC_PREFIX = "whsec_"


def standard_webhook_key(secret: str) -> bytes:
    """The Standard Webhooks signing key: a `whsec_<base64>` secret decoded as that library does; any other
    secret's UTF-8 bytes (a receiver passes them to the library as bytes)."""
    if secret.startswith(WHSEC_PREFIX):
        try:
            key = base64.b64decode(secret[len(WHSEC_PREFIX) :] + "==")  # exactly the library's decoding
        except (binascii.Error, ValueError):
            key = b""
        if key:
            return key
        # Not base64 after all (the library would refuse it): the text is the key, as for any other secret.
    return secret.encode()


def standard_webhook_headers(secret: str, message_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """`webhook-id`, `webhook-timestamp`, `webhook-signature` (`v1,<base64 HMAC-SHA256 of id.timestamp.body>`)."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(standard_webhook_key(secret), signed, hashlib.sha256).digest()
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": "v1," + base64.b64encode(digest).decode(),
    }


def generated_secret() -> str:
    """A fresh `whsec_` secret: 32 random bytes, base64."""
    return WHSEC_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def backoff_seconds(attempts: int, base: float, cap: float) -> float:
    """Exponential back-off with jitter after `attempts` failures (1, 2, …): 0.5–1 × base·2^(n-1)."""
    return min(cap, base * 2 ** min(attempts - 1, 30)) * (0.5 + random.random() / 2)


def concerns_member(data: Mapping[str, Any], member_id: str) -> bool:
    """An institution's subscription sees only events that name its member.

    The member is named in `to_member_id` (referrals), `responsible_member_id` (plan actions),
    `member_id` (the member itself, a shelter it runs), `member_ids[]` (meetings) or the
    `responsible_member_id` of `actions[]` (minutes).
    """
    for name in ("to_member_id", "responsible_member_id", "member_id"):
        if str(data.get(name) or "") == member_id:
            return True
    if member_id in {str(m) for m in data.get("member_ids") or []}:
        return True
    actions = data.get("actions") or []
    return any(isinstance(a, dict) and str(a.get("responsible_member_id") or "") == member_id for a in actions)


class UnsafeUrl(ValueError):
    """A webhook URL this deployment refuses to call."""


def host_allowed(host: str, allowed_hosts: Iterable[str]) -> bool:
    host = host.lower().rstrip(".")
    for pattern in allowed_hosts:
        pattern = pattern.lower().rstrip(".")
        if host == pattern or (pattern.startswith("*.") and host.endswith(pattern[1:])):
            return True
    return False


def check_url(url: str, *, allowed_hosts: list[str]) -> str:
    """Scheme and host rules of a webhook URL; returns its host. Address rules come in `check_address`."""
    try:
        parts = urlsplit(url)
        _ = parts.port
    except ValueError as exc:
        raise UnsafeUrl("The URL is malformed.") from exc
    if parts.scheme not in ("http", "https"):
        raise UnsafeUrl("Only http and https URLs are accepted.")
    if not parts.hostname:
        raise UnsafeUrl("The URL names no host.")
    if parts.username or parts.password:
        raise UnsafeUrl("The URL may not carry credentials.")
    if allowed_hosts and not host_allowed(parts.hostname, allowed_hosts):
        raise UnsafeUrl("The host is not in the webhook allow-list.")
    return parts.hostname


# Cloud instance-metadata and platform endpoints: refused in every environment, allow-listed or not.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean, Oracle, Hetzner…
        "169.254.170.2",  # AWS ECS task metadata
        "169.254.0.23",  # Tencent Cloud
        "100.100.100.200",  # Alibaba Cloud
        "168.63.129.16",  # Azure wire server
        "192.0.0.192",  # Oracle Cloud (classic)
        "fd00:ec2::254",  # AWS IMDS over IPv6
        "fd00:ec2::23",  # AWS DNS over IPv6
        "fd00:ec2::123",  # AWS time over IPv6
    )
)
METADATA_NETWORKS = (ipaddress.ip_network("169.254.0.0/16"), ipaddress.ip_network("fd00:ec2::/32"))
NAT64 = ipaddress.ip_network("64:ff9b::/96")
IPV4_COMPATIBLE = ipaddress.ip_network("::/96")

# One answer for every refused address, whatever the reason: the API tells no one which internal names
# exist or resolve, or to what.
REFUSED_ADDRESS = "The URL's host is not a public address this service may call."


def carried_addresses(address: str) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """The address and every IPv4 address it carries: IPv4-mapped (::ffff:0:0/96), 6to4 (2002::/16),
    Teredo (2001::/32, server and client), NAT64 (64:ff9b::/96) and IPv4-compatible (::/96)."""
    ip = ipaddress.ip_address(address.split("%")[0])
    found: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = [ip]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped:
            return [ip.ipv4_mapped]  # only another spelling of the IPv4 address: judged as that
        if ip in NAT64:
            return [ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)]
        if ip.sixtofour:
            found.append(ip.sixtofour)
        if ip.teredo:
            found.extend(ip.teredo)
        if ip in IPV4_COMPATIBLE and int(ip) > 1:
            found.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return found


def is_metadata_address(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return ip in METADATA_ADDRESSES or any(ip in net for net in METADATA_NETWORKS if ip.version == net.version)


def check_address(address: str, *, environment: str, allow_listed: bool) -> None:
    """Refuse internal addresses, looking through IPv6 addresses that carry an IPv4 one.

    Everywhere: cloud metadata endpoints (even for an allow-listed host), and unless allow-listed
    link-local, multicast and unspecified addresses. Production also refuses private, loopback,
    reserved and every other non-global address; development and test may call loopback and private
    addresses (local receivers). Every refusal says the same (`REFUSED_ADDRESS`).
    """
    try:
        candidates = carried_addresses(address)
    except ValueError as exc:
        raise UnsafeUrl(REFUSED_ADDRESS) from exc
    for ip in candidates:
        if is_metadata_address(ip):
            raise UnsafeUrl(REFUSED_ADDRESS)
        if allow_listed:
            continue
        if ip.is_link_local or ip.is_multicast or ip.is_unspecified:
            raise UnsafeUrl(REFUSED_ADDRESS)
        if environment == "production" and (ip.is_private or ip.is_loopback or ip.is_reserved or not ip.is_global):
            raise UnsafeUrl(REFUSED_ADDRESS)
