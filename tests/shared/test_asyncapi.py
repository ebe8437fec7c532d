"""docs/asyncapi.yaml is the AsyncAPI 3.0 document of every topic and event, current with the contract's models."""

from __future__ import annotations

from typing import Any

import yaml

from shared.contracts import EVENT_TYPES, TOPIC_SOURCES
from shared.contracts.asyncapi import DOCUMENT, channel_id, render


def _committed() -> dict[str, Any]:
    loaded = yaml.safe_load(DOCUMENT.read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def _resolve(document: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = document
    for part in ref[2:].split("/"):
        assert isinstance(node, dict) and part in node, f"{ref} does not resolve"
        node = node[part]
    return node


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if "$ref" in node else []
        return own + [r for value in node.values() for r in _refs(value)]
    if isinstance(node, list):
        return [r for value in node for r in _refs(value)]
    return []


def test_the_committed_document_is_a_fresh_generation() -> None:
    assert DOCUMENT.read_text(encoding="utf-8") == render(), (
        "docs/asyncapi.yaml is stale: run `python -m shared.contracts.asyncapi`"
    )


def test_one_channel_per_topic_with_the_messages_of_its_event_types() -> None:
    document = _committed()
    assert document["asyncapi"] == "3.0.0"
    assert {"title", "version"} <= set(document["info"])
    channels = document["channels"]
    assert {channel["address"] for channel in channels.values()} == set(TOPIC_SOURCES)
    for topic, source in TOPIC_SOURCES.items():
        channel = channels[channel_id(topic)]
        assert channel["address"] == topic
        expected = {type_ for type_, (home, _) in EVENT_TYPES.items() if home == topic}
        assert set(channel["messages"]) == expected, topic
        operation = document["operations"][f"{channel_id(topic)}.publish"]
        assert operation["action"] == "send" and _resolve(document, operation["channel"]["$ref"]) is channel
        assert source in operation["summary"]
    assert set(document["components"]["messages"]) == set(EVENT_TYPES)


def test_every_message_payload_is_the_envelope_with_its_model_as_data() -> None:
    document = _committed()
    schemas = document["components"]["schemas"]
    envelope = schemas["Envelope"]
    assert set(envelope["required"]) == {
        "specversion", "id", "type", "source", "time", "subject", "municipality", "schemaversion",
        "datacontenttype", "data",
    }  # fmt: skip
    assert envelope["properties"]["specversion"] == {"const": "1.0"}
    for type_, (topic, model) in EVENT_TYPES.items():
        message = document["components"]["messages"][type_]
        assert message["name"] == type_ and message["contentType"] == "application/json"
        base, own = message["payload"]["allOf"]
        assert _resolve(document, base["$ref"]) is envelope
        assert own["properties"]["type"] == {"const": type_}
        assert own["properties"]["source"] == {"const": TOPIC_SOURCES[topic]}
        data = _resolve(document, own["properties"]["data"]["$ref"])
        # The model's own JSON Schema (model_json_schema()), its definitions shared under components/schemas.
        fresh = model.model_json_schema(ref_template="#/components/schemas/{model}")
        fresh.pop("$defs", None)
        assert data == fresh, type_
    for ref in _refs(document):
        _resolve(document, ref)
