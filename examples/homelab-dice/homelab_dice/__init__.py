"""homelab-dice: the smallest useful Homelab Core plugin, as a template for your own."""

from __future__ import annotations

import random
from collections.abc import Callable

import attrs

from homelab_core import Metric, Plugin, hookimpl, option


@attrs.define
class DiceConfig:
    """Options of a ``dice`` instance (``[plugins.<id>]`` in homelab.toml)."""

    sides: int = option(6, description="Faces on each die.", minimum=2)
    count: int = option(1, description="How many dice to roll.", minimum=1)


class DiceRoll(Plugin[DiceConfig]):
    """Rolls ``count`` dice with ``sides`` faces on every run."""

    name = "dice"
    title = "Dice roll"
    category = "example"
    description = "Rolls dice and reports each face and the total."
    version = "1.0.0"
    default_interval = 30.0

    def collect(self) -> list[Metric]:
        faces = [random.randint(1, self.config.sides) for _ in range(self.config.count)]
        metrics = [
            Metric("dice.face", face, unit="pips", labels={"die": str(i)})
            for i, face in enumerate(faces)
        ]
        metrics.append(Metric("dice.total", sum(faces), unit="pips"))
        return metrics


@hookimpl
def register_plugins(register: Callable[[type[Plugin]], None]) -> None:
    """Contribute the ``dice`` plugin type."""
    register(DiceRoll)
