"""Run an ArgoCD resource health script as ArgoCD does: Lua 5.1 (ArgoCD embeds gopher-lua, a
Lua 5.1), the object in the global `obj`, the returned table read as its status and message.

Lua comes from `lupa`, which bundles the reference Lua 5.1 interpreter. Like ArgoCD's sandbox,
the script gets no `os`, `io` or module loading.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import lupa.lua51

__all__ = ["Health", "run_health_script"]

_UNAVAILABLE = ("os", "io", "require", "dofile", "loadfile", "package", "debug")


@dataclass(frozen=True)
class Health:
    status: str
    message: str


def run_health_script(script: str, obj: Mapping[str, Any]) -> Health:
    runtime = lupa.lua51.LuaRuntime(register_eval=False, register_builtins=False)
    assert runtime.eval("_VERSION") == "Lua 5.1"
    lua_globals = runtime.globals()
    for name in _UNAVAILABLE:
        lua_globals[name] = None
    lua_globals["obj"] = runtime.table_from(dict(obj), recursive=True)
    result = runtime.execute(script)
    if result is None:
        raise AssertionError("the health script returned nothing")
    return Health(status=str(result["status"]), message=str(result["message"] or ""))
