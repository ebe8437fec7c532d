"""The AsyncAPI 3.0 document of every topic and event, generated from the contract's models.

    python -m shared.contracts.asyncapi            # writes docs/asyncapi.yaml
    python -m shared.contracts.asyncapi --stdout   # prints it

One channel per topic (its address is the logical topic name; deployments prefix it with
MKR_KAFKA_TOPIC_PREFIX), one `send` operation per producing service, one message per event type whose
payload is the CloudEvents 1.0 envelope (CONTRACT §9) with `data` as the type's model
(`model_json_schema()`, shared definitions under components/schemas). tests/shared/test_asyncapi.py fails
when the committed file differs from a fresh generation.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic.json_schema import models_json_schema

from shared.contracts.events import EVENT_TYPES, SCHEMA_VERSION, TOPIC_SOURCES, EventData

ASYNCAPI_VERSION = "3.0.0"
DOCUMENT = Path(__file__).resolve().parents[2] / "docs" / "asyncapi.yaml"
_REF = "#/components/schemas/{model}"


def channel_id(topic: str) -> str:
    """`mkr.intake.events` → `intake`."""
    return topic.removeprefix("mkr.").removesuffix(".events")


def _envelope() -> dict[str, Any]:
    """The CloudEvents 1.0 envelope every message shares: the attributes and the extensions."""
    return {
        "type": "object",
        "description": "A CloudEvents 1.0 event in structured JSON mode. Consumers still read the former "
        "`schema_version` for one release.",
        "required": ["specversion", "id", "type", "source", "time", "subject", "municipality", "schemaversion",
                     "datacontenttype", "data"],
        "properties": {
            "specversion": {"const": "1.0"},
            "id": {"type": "string", "format": "uuid"},
            "type": {"type": "string", "minLength": 1},
            "source": {"enum": list(TOPIC_SOURCES.values())},
            "time": {"type": "string", "format": "date-time"},
            "subject": {"type": "string", "minLength": 1, "maxLength": 200,
                        "description": "The case id (the shelter, member, meeting or delivery id where no case)."},
            "municipality": {"type": "string", "pattern": "^[a-z][a-z0-9_-]{0,62}$"},
            "schemaversion": {"const": SCHEMA_VERSION},
            "datacontenttype": {"const": "application/json"},
            "traceparent": {"type": "string", "maxLength": 128, "description": "W3C trace context (optional)."},
            "data": {"type": "object"},
        },
    }  # fmt: skip


def _payload(type_: str, topic: str, model: type[EventData]) -> dict[str, Any]:
    """One event type's envelope: its `type` and `source`, and `data` as its model."""
    return {
        "allOf": [
            {"$ref": _REF.format(model="Envelope")},
            {
                "properties": {
                    "type": {"const": type_},
                    "source": {"const": TOPIC_SOURCES[topic]},
                    "data": {"$ref": _REF.format(model=model.__name__)},
                }
            },
        ]
    }


def _description(model: type[EventData]) -> str | None:
    doc = model.__doc__
    if not doc or doc == EventData.__doc__ or doc.startswith("!!! abstract"):
        return None
    return " ".join(doc.split())


def document() -> dict[str, Any]:
    """The AsyncAPI document as a mapping (deterministic: the contract's order)."""
    models = [model for _, model in EVENT_TYPES.values()]
    _, schemas = models_json_schema([(model, "validation") for model in models], ref_template=_REF)
    messages: dict[str, Any] = {}
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    for topic, source in TOPIC_SOURCES.items():
        cid = channel_id(topic)
        types = [(type_, model) for type_, (home, model) in EVENT_TYPES.items() if home == topic]
        for type_, model in types:
            message: dict[str, Any] = {"name": type_, "title": model.__name__, "contentType": "application/json"}
            if (description := _description(model)) is not None:
                message["summary"] = description
            message["payload"] = _payload(type_, topic, model)
            messages[type_] = message
        channels[cid] = {
            "address": topic,
            "description": f"Published by {source} only; key: the case id (the shelter id where no case).",
            "messages": {type_: {"$ref": f"#/components/messages/{type_}"} for type_, _ in types},
        }
        operations[f"{cid}.publish"] = {
            "action": "send",
            "channel": {"$ref": f"#/channels/{cid}"},
            "summary": f"{source} publishes through its transactional outbox.",
            "messages": [{"$ref": f"#/channels/{cid}/messages/{type_}"} for type_, _ in types],
        }
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": "MKR events",
            "version": f"{SCHEMA_VERSION}.0.0",
            "description": "The events between the MKR services (CONTRACT §9): CloudEvents 1.0 envelopes in "
            "structured JSON mode. Generated from shared/contracts/events.py by "
            "`python -m shared.contracts.asyncapi`; do not edit by hand.",
        },
        "defaultContentType": "application/json",
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "schemas": {"Envelope": _envelope(), **schemas.get("$defs", {})}},
    }


def render() -> str:
    return yaml.safe_dump(document(), sort_keys=False, allow_unicode=True, width=120)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    text = render()
    if "--stdout" in args:
        sys.stdout.write(text)
    else:
        DOCUMENT.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
