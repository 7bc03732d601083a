"""The one fence around kopf's private API: every name the operator uses that kopf does not
export publicly is reached through this module, and `missing()` says which of them the installed
kopf no longer has.

Why each is needed:

- `Insights` (kopf._cogs.structs.references): what kopf serves; the operator keeps it to ask
  whether kopf watches a kind (`sgmesh.controller.serving`).
- `process_discovered_resource_event` (kopf._core.reactor.observation): kopf's own reaction to
  a CRD event, called again while API discovery lags behind an established CRD.
- `Identity` (kopf._cogs.structs.ids... a NewType of str): the type `kopf.run(identity=...)`
  declares; a plain str is what it holds at run time.

A kopf release that moves or renames one of these fails `missing()` (the contract test, and
the image build through `python -m sgmesh.controller.kopf_compat`) instead of the operator at
start in production. pyproject.toml caps kopf below the next minor release it was tested with.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from collections.abc import Mapping
from typing import Any, cast

__all__ = ["REQUIRED", "identity", "missing", "new_insights", "rescan_discovery"]

# (module, name, parameters the operator passes by keyword)
REQUIRED: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("kopf._cogs.structs.references", "Insights", ()),
    (
        "kopf._core.reactor.observation",
        "process_discovered_resource_event",
        ("raw_event", "settings", "registry", "insights"),
    ),
    ("kopf", "run", ("identity", "insights", "ready_flag", "memo", "peering_name", "priority")),
    ("kopf", "get_default_registry", ()),
)


def missing() -> list[str]:
    """What the installed kopf lacks of `REQUIRED`: module, name or keyword; empty when all is
    there."""
    lacking: list[str] = []
    for module_name, name, keywords in REQUIRED:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            lacking.append(f"module {module_name}")
            continue
        target = getattr(module, name, None)
        if target is None:
            lacking.append(f"{module_name}.{name}")
            continue
        if keywords:
            parameters = inspect.signature(target).parameters
            lacking.extend(
                f"{module_name}.{name}({keyword}=)"
                for keyword in keywords
                if keyword not in parameters
            )
    return lacking


def new_insights() -> Any:
    """A fresh `Insights` for `kopf.run(insights=...)`, kept to ask what kopf serves."""
    from kopf._cogs.structs import references  # noqa: PLC0415 - behind the fence only

    return references.Insights()


async def rescan_discovery(
    crd: Mapping[str, Any], *, settings: Any, registry: Any, insights: Any
) -> None:
    """kopf's own reaction to a CRD event: read API discovery, start or stop watching kinds."""
    from kopf._core.reactor import observation  # noqa: PLC0415 - behind the fence only

    await observation.process_discovered_resource_event(
        raw_event=cast(Any, {"type": "MODIFIED", "object": dict(crd)}),
        settings=settings,
        registry=registry,
        insights=insights,
    )


def identity(name: str) -> Any:
    """`name` as kopf's `Identity` (a NewType of str that kopf does not export)."""
    return name


if __name__ == "__main__":
    # The image build's check: the kopf it installed has every private name used here.
    lacking = missing()
    if lacking:
        print("kopf lacks what sgmesh uses: " + ", ".join(lacking), file=sys.stderr)
        sys.exit(1)
    print("kopf has every private name sgmesh uses")
