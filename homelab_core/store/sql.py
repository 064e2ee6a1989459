"""The few places where SQLite and PostgreSQL SQL differ."""

from __future__ import annotations

import re

import attrs

_PLACEHOLDER = re.compile(r"\?")


@attrs.frozen
class Dialect:
    """SQL spelling for one database engine."""

    name: str

    @property
    def postgres(self) -> bool:
        return self.name == "postgres"

    def q(self, query: str) -> str:
        """Rewrite ``?`` placeholders to the engine's style."""
        if not self.postgres:
            return query
        counter = iter(range(1, 10_000))
        return _PLACEHOLDER.sub(lambda _: f"${next(counter)}", query)

    def bucket(self, column: str, step: float) -> str:
        """An expression giving the start of ``column``'s bucket of ``step`` seconds."""
        step_text = repr(float(step))
        if self.postgres:
            return f"(FLOOR({column} / {step_text}) * {step_text})"
        return f"(CAST({column} / {step_text} AS INTEGER) * {step_text})"

    def least(self, a: str, b: str) -> str:
        return f"LEAST({a}, {b})" if self.postgres else f"MIN({a}, {b})"

    def greatest(self, a: str, b: str) -> str:
        return f"GREATEST({a}, {b})" if self.postgres else f"MAX({a}, {b})"


def dialect_of(url: str) -> Dialect:
    """The dialect of a Tortoise database URL."""
    scheme = url.split(":", 1)[0].lower()
    if scheme in ("postgres", "postgresql", "asyncpg"):
        return Dialect("postgres")
    if scheme == "sqlite":
        return Dialect("sqlite")
    raise ValueError(f"unsupported database URL scheme {scheme!r}: use sqlite:// or postgres://")
