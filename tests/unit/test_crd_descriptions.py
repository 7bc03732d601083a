"""`kubectl explain nodegroupmesh.<field>` answers for every field: the generated schema gives
each property — of spec, of status, nested, and of the items of arrays and maps — a
description. `metadata` is the exception the API server makes: it refuses anything but its type
there, and `kubectl explain` answers with ObjectMeta's own description."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from sgmesh.api import crd


def _schema() -> Mapping[str, Any]:
    schema: Mapping[str, Any] = crd.crd_manifest()["spec"]["versions"][0]["schema"][
        "openAPIV3Schema"
    ]
    return schema


def fields(schema: Mapping[str, Any], path: str = "") -> Iterator[tuple[str, Mapping[str, Any]]]:
    """Every property under `schema`, by its `kubectl explain` path (`[]`: an array's items,
    `{}`: a map's values)."""
    for name, prop in (schema.get("properties") or {}).items():
        field = f"{path}.{name}" if path else name
        yield field, prop
        yield from fields(prop, field)
        items = prop.get("items")
        if isinstance(items, Mapping):
            yield from fields(items, f"{field}[]")
        values = prop.get("additionalProperties")
        if isinstance(values, Mapping):
            yield from fields(values, f"{field}{{}}")


# Described by Kubernetes itself; the API server refuses a description of ours.
OBJECT_METADATA = "metadata"


def undescribed(schema: Mapping[str, Any]) -> list[str]:
    return [
        path
        for path, prop in fields(schema)
        if path != OBJECT_METADATA and not str(prop.get("description", "")).strip()
    ]


def test_every_field_of_the_crd_has_a_description() -> None:
    missing = undescribed(_schema())

    assert not missing, "fields `kubectl explain` cannot explain:\n" + "\n".join(missing)


def test_the_walk_reaches_nested_fields_and_array_items() -> None:
    paths = {path for path, _ in fields(_schema())}

    assert {
        "spec.cniPolicy.policyArn",
        "spec.traffic[].fromPort",
        "spec.autoScalingGroups.selectors[].namePrefix",
        "spec.podSecurityGroups.policies",
        "status.conditions[].reason",
        "status.members[].drainingSecurityGroups[].id",
        "status.cniPolicy.ownedRoles",
    } <= paths


def test_a_field_without_a_description_is_found() -> None:
    schema = {
        "properties": {
            "spec": {
                "description": "x",
                "properties": {
                    "list": {"description": "y", "items": {"properties": {"bare": {}}}},
                    "map": {
                        "description": "z",
                        "additionalProperties": {"properties": {"blank": {"description": " "}}},
                    },
                },
            }
        }
    }

    assert undescribed(schema) == ["spec.list[].bare", "spec.map{}.blank"]


def test_descriptions_of_spec_fields_with_defaults_say_them() -> None:
    spec = _schema()["properties"]["spec"]["properties"]

    for name in ("region", "traffic", "cniPolicy", "mode", "deletionPolicy", "resyncSeconds"):
        assert "Default" in spec[name]["description"], name
