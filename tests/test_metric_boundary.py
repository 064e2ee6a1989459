"""The Metric boundary: every field is checked where a plugin makes it, so that no metric
can reach the store that a supported database would refuse (issue 10, item 1)."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

import anyio
import attrs
import pytest

from homelab_core import (
    Execution,
    Health,
    Hub,
    InstanceSettings,
    Metric,
    Plugin,
    PluginManager,
    hookimpl,
)

LIMITS = "fit every supported database"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"unit": None}, "unit must be text"),
        ({"unit": object()}, "unit must be text"),
        ({"unit": "u" * 33}, "unit is 33 characters long; at most 32"),
        ({"unit": "a\x00b"}, "unit contains a NUL character"),
        ({"unit": "caf\udce9"}, "unit is not valid UTF-8 text"),
        ({"timestamp": math.nan}, "timestamp must be a finite number"),
        ({"timestamp": math.inf}, "timestamp must be a finite number"),
        ({"timestamp": "now"}, "timestamp must be a number"),
        ({"device_class": 3}, "device_class must be text"),
        ({"device_class": "d" * 33}, "device_class is 33 characters long; at most 32"),
        ({"labels": {"path": "/mnt/caf\udce9"}}, "label 'path' is not valid UTF-8 text"),
        ({"labels": {"a\x00": "x"}}, "label name 'a\\x00' contains a NUL character"),
        ({"labels": {"path": "a\x00"}}, "label 'path' contains a NUL character"),
        ({"labels": {"k" * 256: "v"}}, "is 256 characters long; at most 255"),
    ],
    ids=lambda v: repr(v)[:40] if isinstance(v, dict) else None,
)
def test_a_field_no_database_accepts_is_refused_with_a_clear_message(
    fields: dict[str, Any], message: str
) -> None:
    with pytest.raises((TypeError, ValueError), match=f"^metric 'v': .*{re.escape(message[:30])}"):
        Metric("v", 1.0, **fields)


def test_a_name_over_255_characters_is_refused() -> None:
    with pytest.raises(ValueError, match="is 256 characters long; at most 255"):
        Metric("n" * 256, 1.0)


def test_good_metrics_still_pass_and_keep_their_fields() -> None:
    metric = Metric(
        "disk.used",
        5,
        unit="B",
        labels={"path": "/mnt/café", "z": "1", "a": "2"},
        timestamp=1_700_000_000,
        device_class="data_size",
    )
    assert (metric.unit, metric.device_class, metric.timestamp) == (
        "B",
        "data_size",
        1_700_000_000.0,
    )
    assert isinstance(metric.timestamp, float)
    assert list(metric.labels) == ["a", "path", "z"]
    assert Metric("u", 1.0, unit="u" * 32).unit == "u" * 32


class Poison(Plugin):
    """Reports one metric with a unit no database column accepts (``None``)."""

    name = "poison"

    def collect(self) -> list[Metric]:
        return [Metric("ok", 1.0), Metric("v", 1.0, unit=None)]  # type: ignore[arg-type]


class RaisesUnstorable(Plugin):
    """Fails with the text of a non-UTF-8 path, as os.fsdecode gives it, and a NUL."""

    name = "raises_unstorable"

    def collect(self) -> list[Metric]:
        raise OSError("cannot read /mnt/caf\udce9: bad\x00byte")


class BadTypes:
    @hookimpl
    def register_plugins(self, register: Callable[[type[Plugin]], None]) -> None:
        register(Poison)
        register(RaisesUnstorable)


@attrs.frozen
class Observed:
    """What a bad instance left behind, beside a good one, once everything was written."""

    errors: list[Execution]
    health: Health
    good_points: int
    dropped: float


async def run_beside_a_good_instance(
    manager: PluginManager, make_settings: Any, bad_type: str
) -> Observed:
    manager.register(BadTypes(), name="bad_types")
    settings = make_settings(
        InstanceSettings(id="bad", type=bad_type, interval=0.05),
        InstanceSettings(id="good", type="counter", interval=0.05),
    )
    async with Hub(settings, plugin_manager=manager) as hub:
        with anyio.fail_after(5):
            while hub.stats("bad").errors < 3 or hub.stats("good").ok < 3:  # noqa: ASYNC110
                await anyio.sleep(0.01)
        with anyio.fail_after(5):  # a poisoned batch would be retried for ever
            await hub.flush()
        history = await hub.history("good", "count", since=0)
        return Observed(
            errors=await hub.executions("bad", status="error"),
            health=hub.health("bad"),
            good_points=sum(len(s.points) for s in history),
            dropped=hub.counters()["samples_dropped"],
        )


@pytest.mark.anyio
async def test_a_poison_metric_is_an_error_of_its_instance_and_everyone_else_is_stored(
    manager: PluginManager, make_settings: Any
) -> None:
    seen = await run_beside_a_good_instance(manager, make_settings, "poison")
    assert seen.good_points > 0, "the good instance's samples were written"
    assert seen.dropped == 0
    assert seen.errors[0].error == "TypeError: metric 'v': unit must be text, got NoneType"
    assert seen.health.state.value in ("degraded", "failing")
    assert "unit must be text" in seen.health.message


@pytest.mark.anyio
async def test_an_error_text_no_database_stores_is_made_storable_and_stalls_nothing(
    manager: PluginManager, make_settings: Any
) -> None:
    seen = await run_beside_a_good_instance(manager, make_settings, "raises_unstorable")
    assert seen.good_points > 0
    assert seen.errors, "the failing instance's executions were written"
    assert seen.errors[0].error == "OSError: cannot read /mnt/caf\\udce9: bad\\x00byte"
    assert "\\udce9" in seen.health.message
