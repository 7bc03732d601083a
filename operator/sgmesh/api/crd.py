"""The NodeGroupMesh CustomResourceDefinition, generated from the pydantic models.

pydantic's JSON Schema is turned into a Kubernetes *structural* schema: references inlined,
optional fields un-wrapped, titles dropped, maps bounded so that CEL rules have a cost the API
server accepts. `crds/nodegroupmesh.yaml` is this module's output; a test fails on drift.

Pure: no I/O.
"""

from __future__ import annotations

from typing import Any

import pydantic
import yaml

from sgmesh.api import models

__all__ = ["crd_manifest", "render_crd"]

_DROPPED_KEYWORDS = frozenset({"title", "propertyNames", "$defs"})
_NESTED_SCHEMAS = frozenset({"additionalProperties", "items", "allOf", "oneOf"})
MAX_TAGS_PER_SELECTOR = 50


def _structural(schema: Any, definitions: dict[str, Any]) -> Any:
    """Inline `$ref`s, collapse `anyOf [X, null]` to X, and drop what CRDs do not accept."""
    if isinstance(schema, list):
        return [_structural(item, definitions) for item in schema]
    if not isinstance(schema, dict):
        return schema
    if "$ref" in schema:
        referenced = definitions[schema["$ref"].rsplit("/", 1)[-1]]
        merged = {**referenced, **{k: v for k, v in schema.items() if k != "$ref"}}
        return _structural(merged, definitions)
    if "anyOf" in schema:
        options = [option for option in schema["anyOf"] if option.get("type") != "null"]
        if len(options) == 1:
            merged = {**options[0], **{k: v for k, v in schema.items() if k != "anyOf"}}
            if "default" in merged and merged["default"] is None:
                del merged["default"]
            return _structural(merged, definitions)
    result: dict[str, Any] = {}
    for key, value in schema.items():
        if key in _DROPPED_KEYWORDS:
            continue
        if key == "additionalProperties" and isinstance(value, bool):
            continue  # unknown fields are pruned by the API server; `false` is not structural
        if key == "properties":
            result[key] = {name: _structural(prop, definitions) for name, prop in value.items()}
        elif key in _NESTED_SCHEMAS:
            result[key] = _structural(value, definitions)
        else:
            result[key] = value
    if result.get("type") == "object" and "additionalProperties" in result:
        # A map: bound its size so CEL cost estimates stay finite, and check key lengths,
        # which a structural schema cannot express with propertyNames.
        result.setdefault("maxProperties", MAX_TAGS_PER_SELECTOR)
        result.setdefault("x-kubernetes-validations", []).append(
            {
                "rule": "self.all(k, size(k) >= 1 && size(k) <= 128)",
                "message": "tag keys are 1 to 128 characters",
            }
        )
    return _readable(result)


_LEADING_KEYS = ("type", "description", "required", "properties", "items")


def _readable(schema: dict[str, Any]) -> dict[str, Any]:
    """Type and description first, so the generated YAML reads like a hand-written CRD."""
    leading = {key: schema[key] for key in _LEADING_KEYS if key in schema}
    return {**leading, **{k: v for k, v in sorted(schema.items()) if k not in leading}}


def _schema_of(model: type[pydantic.BaseModel]) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    schema: dict[str, Any] = _structural(raw, raw.get("$defs", {}))
    return schema


def _status_schema() -> dict[str, Any]:
    schema = _schema_of(models.NodeGroupMeshStatus)
    # kopf keeps its progress and diff base under status.kopf, never in annotations, so that
    # GitOps tools see no change the operator made to metadata.
    schema["properties"]["kopf"] = {
        "type": "object",
        "description": "The operator's own bookkeeping (kopf's handler progress and last "
        "handled spec); not for people or tools to read or write.",
        "x-kubernetes-preserve-unknown-fields": True,
    }
    return schema


def crd_manifest() -> dict[str, Any]:
    name_rule = models.DNS_LABEL
    columns = [
        {"name": "Members", "type": "integer", "jsonPath": ".status.memberCount"},
        {"name": "Rules", "type": "integer", "jsonPath": ".status.rules.desired"},
        {"name": "Present", "type": "integer", "jsonPath": ".status.rules.present"},
        {"name": "Owned", "type": "integer", "jsonPath": ".status.rules.owned", "priority": 1},
        {
            "name": "Ready",
            "type": "string",
            "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
        },
        {
            "name": "Reason",
            "type": "string",
            "jsonPath": '.status.conditions[?(@.type=="Ready")].reason',
            "priority": 1,
        },
        {"name": "Mode", "type": "string", "jsonPath": ".spec.mode", "priority": 1},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"nodegroupmeshes.{models.API_GROUP}",
            "annotations": {"argocd.argoproj.io/sync-wave": "-10"},
        },
        "spec": {
            "group": models.API_GROUP,
            "scope": "Cluster",
            "names": {
                "kind": models.KIND,
                "listKind": f"{models.KIND}List",
                "plural": models.PLURAL,
                "singular": "nodegroupmesh",
                "shortNames": ["ngm"],
                "categories": ["sgmesh"],
            },
            "versions": [
                {
                    "name": models.API_VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": columns,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": "A set of EKS node groups (ASGs) whose security "
                            "groups admit each other's traffic and whose node roles carry "
                            "the VPC CNI policy.",
                            "required": ["spec"],
                            "x-kubernetes-validations": [
                                {
                                    "rule": f"self.metadata.name.matches('{name_rule}') && "
                                    f"size(self.metadata.name) <= {models.MAX_MESH_NAME_LENGTH}",
                                    "message": "metadata.name must be a DNS label of at most "
                                    f"{models.MAX_MESH_NAME_LENGTH} characters",
                                }
                            ],
                            "properties": {
                                "apiVersion": {
                                    "type": "string",
                                    "description": "The versioned schema of this object: "
                                    f"{models.API_GROUP}/{models.API_VERSION}.",
                                },
                                "kind": {
                                    "type": "string",
                                    "description": f"The object's kind: {models.KIND}.",
                                },
                                # The API server refuses anything but its type here:
                                # `kubectl explain` answers with ObjectMeta's own text.
                                "metadata": {"type": "object"},
                                "spec": _schema_of(models.NodeGroupMeshSpec),
                                "status": _status_schema(),
                            },
                        }
                    },
                }
            ],
        },
    }


def render_crd() -> str:
    return yaml.safe_dump(crd_manifest(), sort_keys=False, width=100)
