"""A JSON Schema (draft 2020-12) of ``homelab.toml``, for editors (``homelab schema``).

The fixed sections come from their settings classes (:func:`~homelab_core.options.config_schema`,
so descriptions, defaults and ranges are the ones validation uses); each ``[plugins.<id>]``
table from the framework's keys and, discriminated by ``type``, the options of that
installed plugin type; the alerting tables from :mod:`homelab_core.alerts.config`, with
each ``[notifiers.<id>]`` table's options discriminated by its notifier ``type``.

The schema is what an editor can check without running anything; ``homelab check-config``
remains the full check (a rule naming a notifier that no table defines, a cron expression,
a database directory that does not exist).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import attrs

from .alerts.config import (
    DURATION_KEYS,
    DURATION_TEXT,
    AlertingSettings,
    MaintenanceSettings,
    RouteSettings,
    RuleSettings,
)
from .config import MIN_MEMORY_LIMIT, SECTIONS, SIZE_PATTERN
from .options import config_schema
from .plugin import SLUG

if TYPE_CHECKING:
    from .notifier import Notifier
    from .plugin import Plugin
    from .plugins import PluginManager

#: The dialect of the schema.
DRAFT = "https://json-schema.org/draft/2020-12/schema"

_ID_NAMES = {"type": "string", "pattern": f"^{SLUG.pattern}$"}
#: A duration of the alerting tables: seconds, or text with a unit ("90s", "5m", "2h").
_DURATION_TEXT = {
    "type": "string",
    "pattern": DURATION_TEXT.pattern,
    "description": "A duration: seconds, or a number with a unit s, m, h, d or w ('5m').",
}


def _summary(cls: type) -> str:
    doc = (cls.__doc__ or "").strip()
    return " ".join(doc.split("\n\n", 1)[0].split())


def _section(cls: type) -> dict[str, Any]:
    schema = config_schema(cls)
    described = {"description": _summary(cls)} if _summary(cls) else {}
    return {**described, **schema}


def _duration(prop: Mapping[str, Any]) -> dict[str, Any]:
    """A number-of-seconds property that also accepts text such as ``"5m"``."""
    numeric = {"type": "number", "minimum": 0}
    for key in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"):
        if key in prop:
            numeric[key] = prop[key]
    if "exclusiveMinimum" in numeric:
        del numeric["minimum"]
    choices: list[dict[str, Any]] = [numeric, dict(_DURATION_TEXT)]
    if any(branch.get("type") == "null" for branch in prop.get("anyOf", ())):
        choices.append({"type": "null"})
    result: dict[str, Any] = {"anyOf": choices}
    for key in ("description", "default"):
        if key in prop:
            result[key] = prop[key]
    return result


def _table(cls: type, durations: Iterable[str], renames: Mapping[str, str] = {}) -> dict[str, Any]:
    """The schema of one ``[<section>.<id>]`` table: ``cls`` without its ``id`` field."""
    schema = _section(cls)
    props = {renames.get(k, k): v for k, v in schema["properties"].items() if k != "id"}
    for key in durations:
        if key in props:
            props[key] = _duration(props[key])
    schema["properties"] = props
    required = [renames.get(k, k) for k in schema.get("required", ()) if k != "id"]
    if required:
        schema["required"] = required
    else:
        schema.pop("required", None)
    return schema


def _keyed(ref: str, description: str) -> dict[str, Any]:
    """A table of tables whose keys are slugs, each one matching ``ref``."""
    return {
        "description": description,
        "type": "object",
        "propertyNames": _ID_NAMES,
        "additionalProperties": {"$ref": ref},
    }


def _options(schema: Mapping[str, Any], framework: Mapping[str, Any]) -> dict[str, Any]:
    """A type's whole table: the framework's keys (checked by the base schema) and the
    type's options, and nothing else."""
    result = copy.deepcopy(dict(schema))
    result["properties"] = {**dict.fromkeys(framework, True), **result.get("properties", {})}
    result["additionalProperties"] = False
    return result


def _discriminated(
    kind: str, types: Mapping[str, type], framework: Mapping[str, Any]
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """One ``if type is X then X's options`` per type, and the ``$defs`` they refer to."""
    branches = []
    defs = {}
    for name in sorted(types):
        config: type = getattr(types[name], "Config", object)
        if not attrs.has(config):
            continue
        defs[f"{kind}.{name}"] = _options(config_schema(config), framework)
        branches.append(
            {
                "if": {"properties": {"type": {"const": name}}, "required": ["type"]},
                "then": {"$ref": f"#/$defs/{kind}.{name}"},
            }
        )
    return branches, defs


def _type_names(types: Mapping[str, type], what: str) -> dict[str, Any]:
    names = sorted(types)
    schema: dict[str, Any] = {"type": "string", "description": what}
    if names:
        schema["enum"] = names
    return schema


def _plugin_instance(types: Mapping[str, type[Plugin]]) -> tuple[dict[str, Any], dict[str, Any]]:
    seconds = {"type": "number", "exclusiveMinimum": 0}
    limit = {"type": "integer", "minimum": 0}
    framework: dict[str, Any] = {
        "type": _type_names(
            types,
            "The plugin type; unset, the table's id (so [plugins.system] is of type system).",
        ),
        "enabled": {
            "type": "boolean",
            "default": True,
            "description": "Whether the instance runs.",
        },
        "interval": {**seconds, "description": "Seconds between runs; unset: the type's."},
        "timeout": {
            **seconds,
            "description": "Seconds a run may take; unset: [scheduler] default_timeout.",
        },
        "node": {
            "type": "string",
            "pattern": f"^{SLUG.pattern}$",
            "description": "The node it runs on, and only there; unset: any node, under a"
            " lease (docs/scale-out.md).",
        },
        "max_samples_per_run": {
            **limit,
            "description": "Samples a run may return (0: no limit); unset: [scheduler]'s.",
        },
        "max_series": {
            **limit,
            "description": "Series the instance may have (0: no limit); unset: [scheduler]'s.",
        },
        "isolation": {
            "enum": ["none", "process"],
            "description": "'process': its plugin runs in a worker process; unset:"
            " [scheduler] isolation (or isolated_types).",
        },
        "worker": {
            "type": "string",
            "pattern": f"^{SLUG.pattern}$",
            "description": "The worker process it shares with the instances naming the same.",
        },
        "memory_limit": {
            "anyOf": [
                {"type": "integer", "minimum": MIN_MEMORY_LIMIT},
                {"type": "string", "pattern": SIZE_PATTERN},
            ],
            "description": 'Most resident memory of its worker process: "256MB", "1GB" or'
            " bytes (at least 48 MiB).",
        },
    }
    branches, defs = _discriminated("plugin", types, framework)
    instance: dict[str, Any] = {
        "description": "A plugin instance: the framework's keys and its type's options.",
        "type": "object",
        "properties": framework,
    }
    if branches:
        instance["allOf"] = branches
    return instance, defs


def _plugins(types: Mapping[str, type[Plugin]]) -> dict[str, Any]:
    """``[plugins]``. A table whose id is an installed type's name may leave out ``type``
    (it defaults to the id); any other table must name its type."""
    by_id = {
        name: {
            "allOf": [{"$ref": "#/$defs/plugin_instance"}],
            "if": {"not": {"required": ["type"]}},
            "then": {"$ref": f"#/$defs/plugin.{name}"},
        }
        for name in sorted(types)
        if attrs.has(getattr(types[name], "Config", object))
    }
    return {
        "description": "One [plugins.<id>] table per plugin instance.",
        "type": "object",
        "propertyNames": _ID_NAMES,
        "properties": by_id,
        "additionalProperties": {
            "allOf": [{"$ref": "#/$defs/plugin_instance"}],
            "required": ["type"],
        },
    }


def _notifier(types: Mapping[str, type[Notifier]]) -> tuple[dict[str, Any], dict[str, Any]]:
    framework: dict[str, Any] = {
        "type": _type_names(types, "The notifier type (webhook, ntfy, email, ...)."),
        "timeout": _duration(
            {
                "exclusiveMinimum": 0,
                "description": "Seconds one send may take; unset: [alerting] send_timeout.",
            }
        ),
        "send_resolved": {
            "type": "boolean",
            "default": True,
            "description": "Also send a message when alerts resolve.",
        },
    }
    branches, defs = _discriminated("notifier", types, framework)
    notifier: dict[str, Any] = {
        "description": "A notifier: its type and that type's options.",
        "type": "object",
        "properties": framework,
        "required": ["type"],
    }
    if branches:
        notifier["allOf"] = branches
    return notifier, defs


def _rule() -> dict[str, Any]:
    rule = _table(RuleSettings, DURATION_KEYS["alerts"], {"for_": "for"})
    # What parse_rule checks across fields, as far as a schema can say it.
    value_rule = {
        "anyOf": [{"not": {"required": ["kind"]}}, {"properties": {"kind": {"const": "value"}}}]
    }
    rule["allOf"] = [
        {"if": value_rule, "then": {"required": ["threshold"]}},
        {
            "if": {"properties": {"kind": {"const": "absence"}}, "required": ["kind"]},
            "then": {"required": ["for"]},
        },
    ]
    return rule


def toml_schema(
    plugin_types: Mapping[str, type[Plugin]],
    notifier_types: Mapping[str, type[Notifier]],
) -> dict[str, Any]:
    """The JSON Schema of a ``homelab.toml`` for these installed plugin and notifier types."""
    instance, plugin_defs = _plugin_instance(plugin_types)
    notifier, notifier_defs = _notifier(notifier_types)
    properties: dict[str, Any] = {name: _section(cls) for name, cls in SECTIONS.items()}
    properties["plugins"] = _plugins(plugin_types)
    properties["alerting"] = _table(AlertingSettings, DURATION_KEYS["alerting"])
    properties["alerts"] = _keyed("#/$defs/rule", "One [alerts.<id>] table per alert rule.")
    properties["notifiers"] = _keyed("#/$defs/notifier", "One [notifiers.<id>] table per notifier.")
    properties["routes"] = _keyed("#/$defs/route", "One [routes.<id>] table per route.")
    properties["maintenance"] = _keyed(
        "#/$defs/maintenance", "One [maintenance.<id>] table per maintenance window."
    )
    return {
        "$schema": DRAFT,
        "title": "homelab.toml",
        "description": "The settings file of Homelab Core (docs/configuration.md).",
        "type": "object",
        "properties": properties,
        "additionalProperties": False,
        "$defs": {
            "plugin_instance": instance,
            **plugin_defs,
            "rule": _rule(),
            "notifier": notifier,
            **notifier_defs,
            "route": _table(RouteSettings, DURATION_KEYS["routes"]),
            "maintenance": _table(MaintenanceSettings, DURATION_KEYS["maintenance"]),
        },
    }


def manager_schema(manager: PluginManager) -> dict[str, Any]:
    """:func:`toml_schema` for the types ``manager`` has loaded."""
    return toml_schema(manager.plugin_types(), manager.notifier_types())
