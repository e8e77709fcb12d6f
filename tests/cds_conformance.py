"""A CDS Hooks 2.0 response checker, written from the spec's rules (CDS Hooks 2.0, https://cds-hooks.hl7.org/2.0/).

`problems(response)` lists every rule a service response breaks; `assert_conformant(response)` fails a test
with that list. Applied to every hook response in the webhook tests.
"""
from __future__ import annotations

import re
from typing import Any

INDICATORS = {"info", "warning", "critical"}
SELECTION_BEHAVIORS = {"at-most-one", "any"}
ACTION_TYPES = {"create", "update", "delete"}
LINK_TYPES = {"absolute", "smart"}
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


def problems(response: Any) -> list[str]:
    if not isinstance(response, dict) or not isinstance(response.get("cards"), list):
        return ["the response is not an object with a 'cards' array"]
    found = []
    if response != {"cards": []}:
        found += _empty_values(response, "$")
    unknown = set(response) - {"cards", "systemActions", "extension"}
    if unknown:
        found.append(f"$: unknown members {sorted(unknown)}")
    uuids: list[str] = []
    for i, card in enumerate(response["cards"]):
        found += _card(card, f"$.cards[{i}]", uuids)
    for i, action in enumerate(response.get("systemActions") or []):
        found += _action(action, f"$.systemActions[{i}]")
    if len(uuids) != len(set(uuids)):
        found.append("$: a uuid is used twice")
    return found


def assert_conformant(response: Any) -> None:
    found = problems(response)
    assert not found, "non-conformant CDS Hooks response:\n" + "\n".join(found)


def _empty_values(value: Any, path: str) -> list[str]:
    if value is None or value == "" or value == [] or value == {}:
        return [f"{path}: empty value {value!r} (null, \"\", [] and {{}} are not allowed)"]
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _empty_values(v, f"{path}.{k}")]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _empty_values(v, f"{path}[{i}]")]
    return []


def _card(card: Any, path: str, uuids: list[str]) -> list[str]:
    if not isinstance(card, dict):
        return [f"{path}: not an object"]
    found = []
    found += _uuid(card.get("uuid"), path, uuids)
    summary = card.get("summary")
    if not isinstance(summary, str) or not summary:
        found.append(f"{path}.summary: required")
    elif len(summary) >= 140:
        found.append(f"{path}.summary: {len(summary)} characters (must be under 140)")
    if card.get("indicator") not in INDICATORS:
        found.append(f"{path}.indicator: {card.get('indicator')!r} is not one of {sorted(INDICATORS)}")
    if "detail" in card and not isinstance(card["detail"], str):
        found.append(f"{path}.detail: must be a string")
    found += _source(card.get("source"), f"{path}.source")
    found += _suggestions(card, path, uuids)
    for i, coding in enumerate(card.get("overrideReasons") or []):
        if not isinstance(coding, dict) or not coding.get("code") or not coding.get("display"):
            found.append(f"{path}.overrideReasons[{i}]: a Coding with code and display is required")
    for i, link in enumerate(card.get("links") or []):
        found += _link(link, f"{path}.links[{i}]")
    if "extension" in card and not isinstance(card["extension"], dict):
        found.append(f"{path}.extension: must be an object")
    return found


def _uuid(value: Any, path: str, uuids: list[str]) -> list[str]:
    if not isinstance(value, str) or not _UUID.match(value):
        return [f"{path}.uuid: missing or not a UUID ({value!r})"]
    uuids.append(value)
    return []


def _source(source: Any, path: str) -> list[str]:
    if not isinstance(source, dict):
        return [f"{path}: required"]
    found = []
    if not isinstance(source.get("label"), str) or not source.get("label"):
        found.append(f"{path}.label: required")
    topic = source.get("topic")
    if topic is not None and (not isinstance(topic, dict) or not topic.get("code")):
        found.append(f"{path}.topic: must be a Coding with a code")
    return found


def _suggestions(card: dict, path: str, uuids: list[str]) -> list[str]:
    suggestions = card.get("suggestions")
    behavior = card.get("selectionBehavior")
    found = []
    if suggestions and behavior not in SELECTION_BEHAVIORS:
        found.append(f"{path}.selectionBehavior: required with suggestions, one of {sorted(SELECTION_BEHAVIORS)}")
    if not suggestions and behavior is not None:
        found.append(f"{path}.selectionBehavior: present without suggestions")
    recommended = 0
    for i, suggestion in enumerate(suggestions or []):
        where = f"{path}.suggestions[{i}]"
        if not isinstance(suggestion, dict):
            found.append(f"{where}: not an object")
            continue
        if not isinstance(suggestion.get("label"), str) or not suggestion.get("label"):
            found.append(f"{where}.label: required")
        found += _uuid(suggestion.get("uuid"), where, uuids)
        recommended += suggestion.get("isRecommended") is True
        for j, action in enumerate(suggestion.get("actions") or []):
            found += _action(action, f"{where}.actions[{j}]")
    if behavior == "at-most-one" and recommended > 1:
        found.append(f"{path}: at-most-one with {recommended} recommended suggestions")
    return found


def _action(action: Any, path: str) -> list[str]:
    if not isinstance(action, dict):
        return [f"{path}: not an object"]
    found = []
    kind = action.get("type")
    if kind not in ACTION_TYPES:
        found.append(f"{path}.type: {kind!r} is not one of {sorted(ACTION_TYPES)}")
    if not isinstance(action.get("description"), str) or not action.get("description"):
        found.append(f"{path}.description: required")
    if kind in ("create", "update"):
        resource = action.get("resource")
        if not isinstance(resource, dict) or not resource.get("resourceType"):
            found.append(f"{path}.resource: a whole FHIR resource is required for {kind}")
        elif kind == "update" and not resource.get("id"):
            found.append(f"{path}.resource: an update needs the resource's id")
    if kind == "delete" and not isinstance(action.get("resourceId"), (str, list)):
        found.append(f"{path}.resourceId: required for delete")
    return found


def _link(link: Any, path: str) -> list[str]:
    if not isinstance(link, dict):
        return [f"{path}: not an object"]
    found = []
    for key in ("label", "url"):
        if not isinstance(link.get(key), str) or not link.get(key):
            found.append(f"{path}.{key}: required")
    if link.get("type") not in LINK_TYPES:
        found.append(f"{path}.type: {link.get('type')!r} is not one of {sorted(LINK_TYPES)}")
    if "appContext" in link and link.get("type") != "smart":
        found.append(f"{path}.appContext: only for smart links")
    return found
