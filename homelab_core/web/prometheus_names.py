"""How a plugin metric is named on ``/metrics``: Prometheus's conventions, applied at exposition.

Plugins name their metrics as they like (``mem.total`` in ``bytes``, ``tls.days_left`` in
``days``, ``queueDepth``); the exposition turns each name, kind and unit into a Prometheus
family the way OpenTelemetry's Prometheus exporter does, so that ``promtool check metrics``
has nothing to say and plugins keep their names everywhere else (the API, the WebSocket,
the store):

- ``homelab_`` and the name in snake_case: other characters (``.``, ``-``, ``:``) become
  ``_``, ``camelCase`` is split, everything lowercase;
- the unit as a suffix in Prometheus's base unit, the value converted (``ms`` to
  ``_seconds`` divided by 1000, ``days`` to ``_seconds``, ``MiB`` to ``_bytes``, ``°F`` to
  ``_celsius``, ``%`` to ``_percent``, ``bytes/s`` to ``_bytes_per_second``); a unit word
  already in the name is replaced in place (``tls.days_left`` becomes
  ``tls_seconds_left``); a name without a unit that names one (``latency_ms``) is read as
  having it, unless the word is a single letter or could be something else (``mb``). Other
  units (``packets``, ``tasks``) are words added to the name unless it has them, as
  OpenTelemetry adds them (``load.1m`` in ``tasks`` is ``homelab_load_1m_tasks``);
- counters end in ``_total`` (moved to the end); other families never end in a suffix that
  Prometheus keeps for another type (``_total``, ``_count``, ``_sum``, ``_bucket``: dropped,
  or followed by ``_value`` when nothing else is left), and no name contains a type's name
  (``gauge``, ``counter`` ...: dropped);
- label names made valid and snake_case.

Every function here is pure and cached: a scrape names each distinct metric once.
"""

from __future__ import annotations

import functools
import re

import attrs

#: Characters that separate words in a name; ``camelCase`` boundaries separate them too.
_SEPARATORS = re.compile(r"[^A-Za-z0-9]+")
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_LABEL_INVALID = re.compile(r"[^A-Za-z0-9_]")
_CAMEL_PAIR = re.compile(r"[a-z][A-Z]")
#: Words no family name may contain: the metric types (promtool's rule).
_TYPE_WORDS = frozenset({"counter", "gauge", "histogram", "summary"})
#: Suffixes Prometheus keeps for other types: a gauge never ends in one.
_RESERVED_ENDINGS = frozenset({"total", "count", "sum", "bucket"})
PREFIX = "homelab"


@attrs.frozen
class Unit:
    """A unit Prometheus has a base unit for: the name's suffix and the conversion to it.

    A value ``v`` in this unit is ``v * scale + offset`` in the base unit.
    """

    suffix: tuple[str, ...]
    scale: float = 1.0
    offset: float = 0.0

    @property
    def base(self) -> str:
        """The base unit as text (``seconds``, ``bytes_per_second``)."""
        return "_".join(self.suffix)

    @property
    def converts(self) -> bool:
        return self.scale != 1.0 or self.offset != 0.0

    def times(self, factor: float) -> Unit:
        return Unit(self.suffix, self.scale * factor, self.offset * factor)


_SECONDS, _BYTES, _METERS = ("seconds",), ("bytes",), ("meters",)
_CELSIUS = ("celsius",)

#: Prefixes promtool recognises before a unit word, with their factors.
_PREFIXES = {
    "pico": 1e-12,
    "nano": 1e-9,
    "micro": 1e-6,
    "milli": 1e-3,
    "centi": 1e-2,
    "deci": 1e-1,
    "deca": 1e1,
    "hecto": 1e2,
    "kilo": 1e3,
    "kibi": 2.0**10,
    "mega": 1e6,
    "mebi": 2.0**20,
    "mibi": 2.0**20,  # promtool's spelling
    "giga": 1e9,
    "gibi": 2.0**30,
    "tera": 1e12,
    "tebi": 2.0**40,
    "peta": 1e15,
    "pebi": 2.0**50,
}

#: Unit words that may appear in a metric's name (promtool's list, plus ``percent`` and the
#: like, so that they are not added twice).
_WORDS = {
    "seconds": Unit(_SECONDS),
    "bytes": Unit(_BYTES),
    "meters": Unit(_METERS),
    "metres": Unit(_METERS),
    "grams": Unit(("grams",)),
    "joules": Unit(("joules",)),
    "volts": Unit(("volts",)),
    "amperes": Unit(("amperes",)),
    "watts": Unit(("watts",)),
    "hertz": Unit(("hertz",)),
    "celsius": Unit(_CELSIUS),
    "kelvin": Unit(("kelvin",)),
    "percent": Unit(("percent",)),
    "ratio": Unit(("ratio",)),
    "minutes": Unit(_SECONDS, 60.0),
    "hours": Unit(_SECONDS, 3600.0),
    "days": Unit(_SECONDS, 86400.0),
    "weeks": Unit(_SECONDS, 604800.0),
    "kelvins": Unit(("kelvin",)),
    "fahrenheit": Unit(_CELSIUS, 5 / 9, -160 / 9),
    "rankine": Unit(_CELSIUS, 5 / 9, -273.15),
    "inches": Unit(_METERS, 0.0254),
    "yards": Unit(_METERS, 0.9144),
    "miles": Unit(_METERS, 1609.344),
    "bits": Unit(_BYTES, 1 / 8),
    "calories": Unit(("joules",), 4.184),
    "pounds": Unit(("grams",), 453.59237),
    "ounces": Unit(("grams",), 28.349523125),
}
#: Abbreviations promtool refuses in names, read as it reads them (``m`` is minutes there).
#: A name's word is taken for its unit only when it cannot be much else: never a single
#: letter, nor ``mb`` (millibar?) and its like; those stay unless the unit confirms them.
_ABBREVIATIONS = {
    "s": Unit(_SECONDS),
    "sec": Unit(_SECONDS),
    "ms": Unit(_SECONDS, 1e-3),
    "us": Unit(_SECONDS, 1e-6),
    "ns": Unit(_SECONDS, 1e-9),
    "m": Unit(_SECONDS, 60.0),
    "h": Unit(_SECONDS, 3600.0),
    "d": Unit(_SECONDS, 86400.0),
    "b": Unit(_BYTES),
    "kb": Unit(_BYTES, 1e3),
    "mb": Unit(_BYTES, 1e6),
    "gb": Unit(_BYTES, 1e9),
    "tb": Unit(_BYTES, 1e12),
    "pb": Unit(_BYTES, 1e15),
}


_GUESSABLE_ABBREVIATIONS = frozenset({"ms", "us", "ns", "sec"})


def _name_word(word: str) -> Unit | None:
    """The unit a word of a metric's name names (``milliseconds``, ``days``, ``kb``)."""
    found = _WORDS.get(word) or _ABBREVIATIONS.get(word)
    if found is not None:
        return found
    for prefix, factor in _PREFIXES.items():
        if word.startswith(prefix):
            base = _WORDS.get(word[len(prefix) :])
            if base is not None and base.offset == 0.0:
                return base.times(factor)
    return None


#: A metric's ``unit`` text: UCUM and everyday spellings.
_UNITS: dict[str, Unit] = {
    **{u: Unit(_SECONDS) for u in ("s", "sec", "second", "seconds")},
    **{u: Unit(_SECONDS, 1e-3) for u in ("ms", "millisecond", "milliseconds")},
    **{u: Unit(_SECONDS, 1e-6) for u in ("us", "µs", "μs", "microsecond", "microseconds")},
    **{u: Unit(_SECONDS, 1e-9) for u in ("ns", "nanosecond", "nanoseconds")},
    **{u: Unit(_SECONDS, 60.0) for u in ("min", "minute", "minutes")},
    **{u: Unit(_SECONDS, 3600.0) for u in ("h", "hr", "hour", "hours")},
    **{u: Unit(_SECONDS, 86400.0) for u in ("d", "day", "days")},
    **{u: Unit(_SECONDS, 604800.0) for u in ("w", "week", "weeks")},
    **{u: Unit(_BYTES) for u in ("B", "By", "byte", "bytes")},
    **{u: Unit(_BYTES, 1e3) for u in ("kB", "KB", "kilobytes")},
    **{u: Unit(_BYTES, 1e6) for u in ("MB", "megabytes")},
    **{u: Unit(_BYTES, 1e9) for u in ("GB", "gigabytes")},
    **{u: Unit(_BYTES, 1e12) for u in ("TB", "terabytes")},
    **{u: Unit(_BYTES, 1e15) for u in ("PB", "petabytes")},
    **{u: Unit(_BYTES, 2.0**10) for u in ("KiB", "kibibytes")},
    **{u: Unit(_BYTES, 2.0**20) for u in ("MiB", "mebibytes")},
    **{u: Unit(_BYTES, 2.0**30) for u in ("GiB", "gibibytes")},
    **{u: Unit(_BYTES, 2.0**40) for u in ("TiB", "tebibytes")},
    **{u: Unit(_BYTES, 2.0**50) for u in ("PiB", "pebibytes")},
    **{u: Unit(_BYTES, 1 / 8) for u in ("bit", "bits")},
    "kbit": Unit(_BYTES, 1e3 / 8),
    "Mbit": Unit(_BYTES, 1e6 / 8),
    "Gbit": Unit(_BYTES, 1e9 / 8),
    **{u: Unit(("percent",)) for u in ("%", "percent")},
    **{u: Unit(("ratio",)) for u in ("1", "ratio")},
    **{u: Unit(_CELSIUS) for u in ("°C", "℃", "C", "Cel", "degC", "celsius")},
    **{u: Unit(_CELSIUS, 5 / 9, -160 / 9) for u in ("°F", "℉", "F", "degF", "fahrenheit")},
    **{u: Unit(("kelvin",)) for u in ("K", "kelvin")},
    **{u: Unit(("volts",)) for u in ("V", "volt", "volts")},
    "mV": Unit(("volts",), 1e-3),
    **{u: Unit(("amperes",)) for u in ("A", "ampere", "amperes")},
    "mA": Unit(("amperes",), 1e-3),
    **{u: Unit(("joules",)) for u in ("J", "joule", "joules")},
    "kJ": Unit(("joules",), 1e3),
    "Wh": Unit(("joules",), 3600.0),
    "kWh": Unit(("joules",), 3.6e6),
    **{u: Unit(("watts",)) for u in ("W", "watt", "watts")},
    "mW": Unit(("watts",), 1e-3),
    "kW": Unit(("watts",), 1e3),
    **{u: Unit(("hertz",)) for u in ("Hz", "hertz")},
    "kHz": Unit(("hertz",), 1e3),
    "MHz": Unit(("hertz",), 1e6),
    "GHz": Unit(("hertz",), 1e9),
    **{u: Unit(_METERS) for u in ("m", "meter", "meters", "metre", "metres")},
    "mm": Unit(_METERS, 1e-3),
    "cm": Unit(_METERS, 1e-2),
    "km": Unit(_METERS, 1e3),
    **{u: Unit(("grams",)) for u in ("g", "gram", "grams")},
    "mg": Unit(("grams",), 1e-3),
    "kg": Unit(("grams",), 1e3),
}
#: Units of time a rate may be per (``bytes/s``, ``packets/min``).
_PER = {
    "s": 1.0,
    "sec": 1.0,
    "second": 1.0,
    "min": 60.0,
    "minute": 60.0,
    "h": 3600.0,
    "hour": 3600.0,
    "d": 86400.0,
    "day": 86400.0,
}


def unit_of(text: str) -> Unit | None:
    """The base unit and conversion of a metric's ``unit`` text, or None for an annotation
    (``packets``, ``tasks``) or no unit."""
    if not text:
        return None
    found = _UNITS.get(text) or (_UNITS.get(text.lower()) if len(text) > 2 else None)
    if found is not None:
        return found
    numerator, slash, per = text.partition("/")
    if slash and per in _PER:
        top = unit_of(numerator.strip())
        suffix = (*(top.suffix if top else ()), "per", "second")
        return Unit(suffix, (top.scale if top else 1.0) / _PER[per])
    return None


def words(name: str) -> list[str]:
    """The lowercase words of a name: split at other characters and ``camelCase``."""
    return [
        piece.lower()
        for part in _SEPARATORS.split(name)
        if part
        for piece in _CAMEL.split(part)
        if piece
    ]


@attrs.frozen
class Naming:
    """How one plugin metric is exposed: its family's name and type, and its value's
    conversion to the family's unit (``value * scale + offset``)."""

    family: str
    type: str
    #: The base unit the family is in, if Prometheus has one for the metric's unit.
    unit: Unit | None
    scale: float = attrs.field(init=False)
    offset: float = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        unit = self.unit
        object.__setattr__(self, "scale", 1.0 if unit is None else unit.scale)
        object.__setattr__(self, "offset", 0.0 if unit is None else unit.offset)

    def value(self, value: float) -> float:
        """``value`` in the family's unit."""
        return value * self.scale + self.offset


def annotation(unit: str) -> tuple[str, ...]:
    """The words of a unit Prometheus has no base unit for (``tasks``, ``packets``), as
    name words; none if one of them would read as a unit, a type or a reserved ending."""
    found = tuple(w for w in _SEPARATORS.split(unit.lower()) if w)
    if any(
        w in _TYPE_WORDS or w in _RESERVED_ENDINGS or _name_word(w) is not None or not w.isascii()
        for w in found
    ):
        return ()
    return found


def _guessable(word: str) -> bool:
    return (
        word in _WORDS
        or word in _GUESSABLE_ABBREVIATIONS
        or (word not in _ABBREVIATIONS and _name_word(word) is not None)
    )


def _contains(tokens: list[str], run: tuple[str, ...]) -> bool:
    n = len(run)
    return any(tuple(tokens[i : i + n]) == run for i in range(len(tokens) - n + 1))


@functools.lru_cache(maxsize=65_536)
def naming(name: str, kind: str, unit: str) -> Naming:
    """The Prometheus family of a plugin metric ``name`` of ``kind`` (``gauge``, ``counter``,
    ``histogram`` or ``summary``) in ``unit``."""
    tokens = words(name)
    found = unit_of(unit)
    if found is None and not unit:  # a unit the name spells out: "latency_ms"
        found = next((_name_word(t) for t in tokens if _guessable(t)), None)
    if found is None and unit:  # an annotation, added as OpenTelemetry does: "tasks"
        extra = annotation(unit)
        if extra and not _contains(tokens, extra):
            tokens = [*tokens, *extra]
    if found is not None and not _contains(tokens, found.suffix):
        dimension = found.suffix[0]
        places = [
            i
            for i, token in enumerate(tokens)
            if (word := _name_word(token)) is not None and word.suffix[0] == dimension
        ]
        if places:  # replace the unit word where it stands; drop any repetition
            first = places[0]
            tokens = [
                *tokens[:first],
                *found.suffix,
                *(t for i, t in enumerate(tokens[first + 1 :], first + 1) if i not in places),
            ]
        else:
            tokens = [*tokens, *found.suffix]
    tokens = [t for t in tokens if t not in _TYPE_WORDS]
    if kind == "counter":
        tokens = [t for t in tokens if t != "total"] + ["total"]
    else:
        ending: list[str] = []
        while tokens and tokens[-1] in _RESERVED_ENDINGS:
            ending.insert(0, tokens.pop())
        if not tokens:  # the name was only such words: keep them, end differently
            tokens = [*ending, "value"]
    family = "_".join([PREFIX, *tokens])
    return Naming(family, kind, found)


@functools.lru_cache(maxsize=65_536)
def label_name(name: str) -> str:
    """A plugin's label name as a valid Prometheus label name, in snake_case."""
    if _CAMEL_PAIR.search(name):
        name = "_".join(words(name))
    cleaned = _LABEL_INVALID.sub("_", name) or "_"
    return f"_{cleaned}" if cleaned[0].isdigit() else cleaned
