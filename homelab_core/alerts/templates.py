"""Summary and description templates of alert rules.

A template is Python format text with a fixed set of names: ``"{instance}: {labels[mount]}
is {value:.0f} % full"``. The names are ``value``, ``threshold``, ``rule``, ``severity``,
``state``, ``instance``, ``type``, ``metric``, ``unit`` and ``labels`` (looked up as
``labels[name]``; a label the series does not have renders empty). Attribute access
(``{value.real}``) and positional fields are refused, so a template can only read what the
rule gives it. A template is compiled, and rendered once with sample values, when the file
is loaded, so an unknown name or a bad format spec (``{value:.2q}``) is a config error.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from typing import Any

#: The names a template may use.
FIELDS = frozenset(
    {
        "value",
        "threshold",
        "rule",
        "severity",
        "state",
        "instance",
        "type",
        "metric",
        "unit",
        "labels",
    }
)


class TemplateError(ValueError):
    """A template that does not compile or names something it may not."""


class _Labels(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return ""


class _Formatter(string.Formatter):
    def get_field(self, field_name: str, args: Any, kwargs: Any) -> Any:
        root, _, rest = field_name.partition("[")
        value = kwargs[root]
        if rest:
            key = rest[:-1]
            value = value[key]
        return value, root


_FORMATTER = _Formatter()
_SAMPLE: dict[str, Any] = {
    "value": 1.5,
    "threshold": 1.0,
    "rule": "rule",
    "severity": "warning",
    "state": "firing",
    "instance": "instance",
    "type": "type",
    "metric": "metric",
    "unit": "",
    "labels": _Labels(),
}


class Template:
    """A compiled template; :meth:`render` fills it in."""

    def __init__(self, text: str) -> None:
        self.text = text
        try:
            parsed = list(_FORMATTER.parse(text))
        except ValueError as exc:
            raise TemplateError(f"{exc} in {text!r}") from None
        for _, field, spec, conversion in parsed:
            if field is None:
                continue
            self._check_field(field, text)
            if spec and ("{" in spec):
                raise TemplateError(f"nested fields in a format spec are not allowed in {text!r}")
            if conversion not in (None, "s", "r"):
                raise TemplateError(f"unknown conversion !{conversion} in {text!r}")
        try:
            self.render(_SAMPLE)
        except (ValueError, TypeError, KeyError, IndexError) as exc:
            raise TemplateError(f"{exc} in {text!r}") from None

    @staticmethod
    def _check_field(field: str, text: str) -> None:
        if field == "" or field.isdigit():
            raise TemplateError(f"positional fields ({{}}) are not allowed in {text!r}; use a name")
        if "." in field:
            raise TemplateError(f"attribute access ({{{field}}}) is not allowed in {text!r}")
        root, bracket, rest = field.partition("[")
        if root not in FIELDS:
            raise TemplateError(
                f"unknown name {root!r} in {text!r}; known: {', '.join(sorted(FIELDS))}"
            )
        if bracket:
            if root != "labels" or not rest.endswith("]") or "[" in rest:
                raise TemplateError(f"only labels[name] may be indexed, in {text!r}")
        elif root == "labels":
            raise TemplateError(f"write labels[name], not {{labels}}, in {text!r}")

    def render(self, context: Mapping[str, Any]) -> str:
        """The text with ``context``'s values; numbers print without needless digits."""
        values = dict(context)
        labels = values.get("labels")
        values["labels"] = labels if isinstance(labels, _Labels) else _Labels(labels or {})
        for key in ("value", "threshold"):
            number = values.get(key)
            if isinstance(number, float) and number.is_integer() and abs(number) < 1e15:
                values[key] = _Number(number)
        return _FORMATTER.vformat(self.text, (), values)


class _Number(float):
    """A float that prints as ``93`` rather than ``93.0`` unless a format spec says more."""

    def __str__(self) -> str:
        return str(int(self))

    def __format__(self, spec: str) -> str:
        return str(self) if not spec else float(self).__format__(spec)
