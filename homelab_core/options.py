"""Plugin configuration classes: declaring fields, validating input, redacting secrets.

A plugin type's ``Config`` is an attrs class. Its fields are built with :func:`option`,
which records a description and whether the value is secret. :func:`build_config` turns a
mapping from ``homelab.toml`` (or ``--set key=value`` strings) into an instance, naming the
field at fault in every error.
"""

from __future__ import annotations

import collections.abc
import enum
import json
import math
import re
import types
from collections.abc import Collection, Iterable, Mapping
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

import attrs

from .errors import ConfigError
from .redact import REDACTED as REDACTED
from .redact import Redactor, redact_urls, url_secrets

_T = TypeVar("_T")


def option(
    default: Any = attrs.NOTHING,
    *,
    description: str = "",
    secret: bool = False,
    factory: Any = None,
    validator: Any = None,
    minimum: float | None = None,
    maximum: float | None = None,
    exclusive_minimum: float | None = None,
    exclusive_maximum: float | None = None,
    min_length: int | None = None,
    max_length: int | None = None,
) -> Any:
    """Declare a config field with a description; ``secret=True`` redacts it in every output,
    the config's ``repr()`` and ``str()`` included (which also hide URL passwords).

    A secret option is masked as a whole: a text, a number, every item of a list and every
    value of a mapping (a header map keeps its names and hides its values). Its values are
    also removed from the instance's error texts, health messages and log lines.

    ``minimum``/``maximum`` (inclusive) and ``exclusive_minimum``/``exclusive_maximum``
    bound a number; ``min_length``/``max_length`` bound the length of a text (or of a
    list). They are checked before ``validator`` (a value of None is not checked), with a
    message that names the field and the accepted range, and they appear in
    :func:`config_schema` as ``minimum``, ``maximum``, ``exclusiveMinimum``,
    ``exclusiveMaximum``, ``minLength``/``maxLength`` (``minItems``/``maxItems`` for a list).
    """
    bounds = {
        key: value
        for key, value in (
            ("minimum", minimum),
            ("maximum", maximum),
            ("exclusiveMinimum", exclusive_minimum),
            ("exclusiveMaximum", exclusive_maximum),
            ("minLength", min_length),
            ("maxLength", max_length),
        )
        if value is not None
    }
    metadata: dict[str, Any] = {"description": description, "secret": secret}
    if bounds:
        metadata["bounds"] = bounds
        checks = [_Bounds(bounds)]
        if isinstance(validator, list | tuple):
            checks += validator
        elif validator is not None:
            checks.append(validator)
        validator = checks
    # repr() and str() of a config never show a secret, nor a URL's password: a plugin that
    # logs its config leaks nothing.
    shown = _secret_repr if secret else _plain_repr
    if factory is not None:
        return attrs.field(factory=factory, metadata=metadata, validator=validator, repr=shown)
    return attrs.field(default=default, metadata=metadata, validator=validator, repr=shown)


def _number(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def describe_range(bounds: Mapping[str, float]) -> str:
    """The accepted range in words: ``between 1 and 65535``, ``more than 0``, ``0 or more``."""
    low, high = bounds.get("minimum"), bounds.get("maximum")
    if low is not None and high is not None:
        return f"between {_number(low)} and {_number(high)}"
    parts = []
    if low is not None:
        parts.append(f"{_number(low)} or more")
    if "exclusiveMinimum" in bounds:
        parts.append(f"more than {_number(bounds['exclusiveMinimum'])}")
    if high is not None:
        parts.append(f"at most {_number(high)}")
    if "exclusiveMaximum" in bounds:
        parts.append(f"less than {_number(bounds['exclusiveMaximum'])}")
    return " and ".join(parts)


@attrs.frozen
class _Bounds:
    """The validator of an option's range and length bounds (see :func:`option`)."""

    bounds: Mapping[str, float]

    def __call__(self, _: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value is None:
            return
        name = attribute.name
        if isinstance(value, int | float) and not isinstance(value, bool):
            numeric = {k: v for k, v in self.bounds.items() if "Length" not in k}
            low, high = numeric.get("minimum"), numeric.get("maximum")
            above, below = numeric.get("exclusiveMinimum"), numeric.get("exclusiveMaximum")
            if (
                (low is not None and value < low)
                or (high is not None and value > high)
                or (above is not None and value <= above)
                or (below is not None and value >= below)
            ):
                raise ValueError(
                    f"'{name}' must be {describe_range(numeric)}, got {_number(value)}", attribute
                )
        elif isinstance(value, str | list | tuple):
            unit = "character" if isinstance(value, str) else "item"
            shortest, longest = self.bounds.get("minLength"), self.bounds.get("maxLength")
            if shortest is not None and len(value) < shortest:
                raise ValueError(
                    f"'{name}' must have at least {shortest} {unit}{'s' * (shortest != 1)},"
                    f" got {len(value)}",
                    attribute,
                )
            if longest is not None and len(value) > longest:
                raise ValueError(
                    f"'{name}' must have at most {longest} {unit}{'s' * (longest != 1)},"
                    f" got {len(value)}",
                    attribute,
                )


def _secret_repr(value: Any) -> str:
    return repr(_mask(value))


def _plain_repr(value: Any) -> str:
    return redact_urls(repr(value))


@attrs.define
class NoConfig:
    """The config of a plugin type that takes no options."""


def _fields(cls: type) -> tuple[attrs.Attribute[Any], ...]:
    attrs.resolve_types(cls)
    fields: tuple[attrs.Attribute[Any], ...] = attrs.fields(cls)
    return fields


def secret_fields(cls: type) -> set[str]:
    """The names of the fields of ``cls`` marked secret."""
    return {f.name for f in _fields(cls) if f.metadata.get("secret")}


def _leaves(value: Any) -> Iterable[str]:
    """Every text and number inside ``value`` (mappings' values, lists' items), as text."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, enum.Enum):
        yield str(value.value)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        yield str(value)
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _leaves(item)
    elif isinstance(value, list | tuple | set | frozenset):
        for item in value:
            yield from _leaves(item)


def secret_values(config: Any) -> list[str]:
    """The secrets of a config object: every value of its secret fields, and the password
    of every URL in any of its text values (``http://user:password@host``).

    What a :class:`~homelab_core.redact.Redactor` removes from the instance's texts. A
    config that is not an attrs class (a plugin made by hand in a test) has none.
    """
    found: list[str] = []
    if not attrs.has(type(config)):
        return found
    for field in _fields(type(config)):
        value = getattr(config, field.name)
        if field.metadata.get("secret"):
            found += (text for text in _leaves(value) if text)
        else:
            for text in _leaves(value):
                found += url_secrets(text)
    return found


def _mask(value: Any) -> Any:
    """A secret value as shown: its shape kept, every text or number in it hidden."""
    if value is None or value == "":
        return value
    if isinstance(value, Mapping):
        return {k: _mask(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_mask(v) for v in value]
    return REDACTED


def _shown(value: Any) -> Any:
    """A value that is not secret as shown: enums by value, tuples as lists, URLs without
    their credentials."""
    if isinstance(value, str):
        return redact_urls(value)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Mapping):
        return {k: _shown(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_shown(v) for v in value]
    return value


def _type_name(tp: Any) -> str:
    if tp is type(None):
        return "null"
    origin = get_origin(tp)
    if origin is Literal:
        return " or ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(tp))
    if origin is not None:
        return str(tp).replace("typing.", "")
    return getattr(tp, "__name__", str(tp))


class _Invalid(Exception):
    pass


def _convert(value: Any, tp: Any, from_text: bool) -> Any:
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        is_null = value is None or (from_text and value in ("", "null", "none"))
        if is_null and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, from_text)
            except _Invalid:
                continue
        raise _Invalid
    if origin is Literal:
        for choice in get_args(tp):
            if value == choice or (from_text and str(choice) == value):
                return choice
        raise _Invalid
    if tp is bool:
        if isinstance(value, bool):
            return value
        if from_text and isinstance(value, str):
            lowered = value.strip().lower()
            if lowered in ("true", "yes", "on", "1"):
                return True
            if lowered in ("false", "no", "off", "0"):
                return False
        raise _Invalid
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if from_text and isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                raise _Invalid from None
        raise _Invalid
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            result = float(value)
        elif from_text and isinstance(value, str):
            try:
                result = float(value.strip())
            except ValueError:
                raise _Invalid from None
        else:
            raise _Invalid
        if not math.isfinite(result):
            raise _Invalid
        return result
    if tp is str:
        if isinstance(value, str):
            return value
        raise _Invalid
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        for member in tp:
            if value == member.value or (from_text and value in (str(member.value), member.name)):
                return member
        raise _Invalid
    if origin in (list, tuple, collections.abc.Sequence) or tp in (list, tuple):
        if from_text and isinstance(value, str):
            value = _parse_json_or_csv(value)
        if not isinstance(value, list | tuple):
            raise _Invalid
        args = get_args(tp) or (Any,)
        items = [_convert(v, args[0], from_text) for v in value]
        return tuple(items) if origin is tuple or tp is tuple else items
    if origin in (dict, collections.abc.Mapping) or tp is dict:
        if from_text and isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError:
                raise _Invalid from None
        if not isinstance(value, Mapping):
            raise _Invalid
        args = get_args(tp) or (Any, Any)
        return {str(k): _convert(v, args[1], from_text) for k, v in value.items()}
    raise _Invalid


def _parse_json_or_csv(text: str) -> Any:
    stripped = text.strip()
    if stripped.startswith("["):
        try:
            return json.loads(stripped)
        except ValueError:
            raise _Invalid from None
    return [part.strip() for part in stripped.split(",") if part.strip()]


def build_config(
    cls: type[_T],
    data: Mapping[str, Any],
    *,
    file: str | None = None,
    table: str | None = None,
    from_text: bool = False,
    text_fields: Collection[str] = (),
) -> _T:
    """Validate ``data`` against the attrs class ``cls`` and return an instance.

    ``from_text=True`` parses strings to each field's type (for ``--set key=value``);
    ``text_fields`` does so for the named fields only (values from the environment).
    Errors are :class:`ConfigError` naming ``file``, ``table`` and the field.
    """
    fields = {f.name: f for f in _fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        known = ", ".join(sorted(fields)) or "none"
        raise ConfigError(
            f"unknown field; accepted fields: {known}",
            file=file,
            table=table,
            field=unknown[0],
        )
    kwargs: dict[str, Any] = {}
    for name, field in fields.items():
        if name not in data:
            if field.default is attrs.NOTHING:
                raise ConfigError("is required", file=file, table=table, field=name)
            continue
        value = data[name]
        try:
            kwargs[name] = _convert(value, field.type, from_text or name in text_fields)
        except _Invalid:
            shown = REDACTED if field.metadata.get("secret") else redact_urls(repr(value))
            raise ConfigError(
                f"expected {_type_name(field.type)}, got {shown}",
                file=file,
                table=table,
                field=name,
            ) from None
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        culprit, message = _validator_failure(exc, fields)
        secrets = [
            text
            for name, value in kwargs.items()
            for text in _leaves(value)
            if fields[name].metadata.get("secret")
        ]
        message = Redactor(secrets)(message)
        raise ConfigError(message, file=file, table=table, field=culprit) from None


def _validator_failure(
    exc: Exception, fields: Mapping[str, attrs.Attribute[Any]]
) -> tuple[str | None, str]:
    """The field an attrs validator rejected, and its message without the attribute's repr."""
    args = exc.args
    message = args[0] if args and isinstance(args[0], str) else str(exc)
    for arg in args[1:]:
        if isinstance(arg, attrs.Attribute):
            return arg.name, message
    quoted = re.search(r"'([A-Za-z_][A-Za-z0-9_]*)'", message)
    if quoted and quoted.group(1) in fields:
        return quoted.group(1), message
    return None, message


def config_to_dict(config: Any, *, redact: bool = True) -> dict[str, Any]:
    """The config as a JSON-ready mapping; unless told not to, secret fields are masked
    (see :func:`option`) and URLs in the other fields shown without their credentials."""
    result: dict[str, Any] = {}
    for field in _fields(type(config)):
        value = getattr(config, field.name)
        if not redact:
            if isinstance(value, enum.Enum):
                value = value.value
            elif isinstance(value, tuple):
                value = list(value)
        elif field.metadata.get("secret"):
            value = _mask(value)
        else:
            value = _shown(value)
        result[field.name] = value
    return result


def redact_mapping(data: Mapping[str, Any], secrets: set[str]) -> dict[str, Any]:
    """A copy of ``data`` with the keys in ``secrets`` masked, as :func:`config_to_dict`
    masks secret fields."""
    return {k: (_mask(v) if k in secrets else v) for k, v in data.items()}


def _schema_of(tp: Any) -> dict[str, Any]:
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        return {"anyOf": [_schema_of(a) for a in get_args(tp)]}
    if origin is Literal:
        return {"enum": list(get_args(tp))}
    simple = {bool: "boolean", int: "integer", float: "number", str: "string"}
    if tp in simple:
        return {"type": simple[tp]}
    if tp is type(None):
        return {"type": "null"}
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return {"enum": [m.value for m in tp]}
    if origin in (list, tuple) or tp in (list, tuple):
        args = get_args(tp)
        return {"type": "array", "items": _schema_of(args[0]) if args else {}}
    if origin is dict or tp is dict:
        args = get_args(tp)
        return {"type": "object", "additionalProperties": _schema_of(args[1]) if args else {}}
    return {}


def _mark_password(schema: dict[str, Any]) -> None:
    """Give every text in ``schema`` (the field's own, its items', its values') the
    ``password`` format, which form generators show masked."""
    if schema.get("type") == "string":
        schema["format"] = "password"
    for key in ("items", "additionalProperties"):
        inner = schema.get(key)
        if isinstance(inner, dict):
            _mark_password(inner)
    for inner in schema.get("anyOf", ()):
        _mark_password(inner)


def _is_list(tp: Any) -> bool:
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        return any(_is_list(a) for a in get_args(tp))
    return origin in (list, tuple, collections.abc.Sequence) or tp in (list, tuple)


def config_schema(cls: type) -> dict[str, Any]:
    """A JSON Schema of the config class, with descriptions, defaults and secret flags."""
    properties: dict[str, Any] = {}
    required: list[str] = []
    for field in _fields(cls):
        prop = _schema_of(field.type)
        if field.metadata.get("description"):
            prop["description"] = field.metadata["description"]
        for key, bound in field.metadata.get("bounds", {}).items():
            if "Length" in key and _is_list(field.type):
                key = key.replace("Length", "Items")
            prop[key] = bound
        if field.metadata.get("secret"):
            prop["writeOnly"] = True
            prop["x-secret"] = True
            _mark_password(prop)
        if field.default is attrs.NOTHING:
            required.append(field.name)
        elif isinstance(field.default, attrs.Factory):  # type: ignore[arg-type]
            default = field.default.factory()  # type: ignore[union-attr]
            prop["default"] = _mask(default) if field.metadata.get("secret") else default
        elif field.metadata.get("secret"):
            prop["default"] = _mask(field.default)
        else:
            default = field.default
            prop["default"] = default.value if isinstance(default, enum.Enum) else default
        properties[field.name] = prop
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    schema["additionalProperties"] = False
    return schema
