"""The per-kind hook table, keyed by (group, kind): defaulting, validation, name rules,
printer columns and strategy facts. Family modules register into it at import."""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from k3py.api.errors import Cause
from k3py.api.validation import NameCheck, dns1123_subdomain

__all__ = ["KindHooks", "HOOKS", "register", "hooks_for", "col", "NAME_COL", "AGE_COL",
           "Defaulter", "Validator", "RowFn"]

Defaulter = Callable[[dict, "dict | None"], None]
Validator = Callable[[dict, "dict | None"], list[Cause]]
RowFn = Callable[[dict, _dt.datetime], list[Any]]


@dataclass(frozen=True)
class KindHooks:
    default: Defaulter | None = None
    validate: Validator | None = None
    name_check: NameCheck = dns1123_subdomain
    columns: list[dict] | None = None
    row: RowFn | None = None
    # the kind's strategy sets metadata.generation = 1 on create and bumps it on spec changes
    generation: bool = False
    # metadata fields a /status write may not change (besides the spec)
    status_keeps_metadata: tuple[str, ...] = ()
    # top-level fields besides "spec" that only the main resource may change
    spec_fields: tuple[str, ...] = ("spec",)
    extra: dict = field(default_factory=dict)


HOOKS: dict[tuple[str, str], KindHooks] = {}
_FALLBACK = KindHooks()


def register(group: str, kind: str, **kw: Any) -> None:
    """Add or extend the hooks of one kind (several modules may each set some fields)."""
    HOOKS[(group, kind)] = replace(HOOKS.get((group, kind), _FALLBACK), **kw)


def hooks_for(group: str, kind: str) -> KindHooks:
    return HOOKS.get((group, kind), _FALLBACK)


def col(name: str, type_: str = "string", description: str = "", priority: int = 0,
        format_: str = "") -> dict:
    """One meta.k8s.io/v1 TableColumnDefinition."""
    return {"name": name, "type": type_, "format": format_, "description": description,
            "priority": priority}


NAME_COL = col("Name", "string",
               "Name must be unique within a namespace. Is required when creating resources, "
               "although some resources may allow a client to request the generation of an "
               "appropriate name automatically. Name is primarily intended for creation "
               "idempotence and configuration definition. Cannot be updated. More info: "
               "https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names",
               format_="name")
AGE_COL = col("Age", "string",
              "CreationTimestamp is a timestamp representing the server time when this object "
              "was created. It is not guaranteed to be set in happens-before order across "
              "separate operations. Clients may not set this value. It is represented in "
              "RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for "
              "lists. More info: https://git.k8s.io/community/contributors/devel/"
              "sig-architecture/api-conventions.md#metadata")
