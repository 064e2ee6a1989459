"""Every hook a plugin module can implement, in one place.

Implement a hook by writing a function of the same name, decorated with
:data:`homelab_core.hookimpl`, in the module an entry point of the ``homelab.plugins`` group
names. ``register_*`` hooks contribute things; the others are events. Event hooks may be
plain functions or coroutines: the hub awaits what they return, and an error in one
implementation is logged without stopping the others. Implementations run one at a time,
``tryfirst`` ones first, ``trylast`` ones last and the others in the order their plugins
were registered.

The plugin manager calls each implementation itself, so pluggy's hook wrappers
(``wrapper=True``, ``hookwrapper=True``) and ``firstresult`` specs cannot work (a wrapper
would see coroutines, not results): a plugin that uses them is refused. See
docs/hooks.md.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    import click

    from .hub import Hub
    from .model import Execution, Health, Metric
    from .notifier import Notifier
    from .plugin import Plugin

PROJECT = "homelab"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def register_plugins(register: Callable[[type[Plugin]], None]) -> None:
    """Contribute plugin types.

    Called once, when the plugin manager first needs the list of plugin types (the hub
    starting, or a CLI command that lists or runs plugins).

    :param register: call it with each :class:`~homelab_core.Plugin` subclass to contribute.
        It validates the class and raises :class:`~homelab_core.errors.PluginRegistrationError`
        naming your plugin if the class is unusable or its ``name`` is already taken.
    :return: nothing; return values are ignored.
    """


@hookspec
def register_notifiers(register: Callable[[type[Notifier]], None]) -> None:
    """Contribute notifier types (where alerts are sent: a webhook, ntfy, e-mail, ...).

    Called once, when the plugin manager first needs the list of notifier types (the hub
    starting with ``[notifiers.<id>]`` tables, or ``homelab notify-test``).

    :param register: call it with each :class:`~homelab_core.Notifier` subclass to
        contribute. It validates the class and raises
        :class:`~homelab_core.errors.PluginRegistrationError` naming your plugin if the class
        is unusable or its ``name`` is already taken by another notifier type.
    :return: nothing; return values are ignored.
    """


@hookspec
def register_commands(cli: click.Group) -> None:
    """Add commands to the ``homelab`` command line.

    Called once, when the ``homelab`` command builds its list of sub-commands.

    :param cli: the root :class:`click.Group`; call ``cli.add_command(...)``.
    :return: nothing; return values are ignored.
    """


@hookspec
def hub_startup(hub: Hub) -> Any:
    """Run code when a hub has started.

    Called after the store is open and the scheduler is running, before ``async with Hub``
    hands the hub to its caller.

    :param hub: the running :class:`~homelab_core.Hub`.
    :return: None or an awaitable, which the hub awaits.
    """


@hookspec
def hub_shutdown(hub: Hub) -> Any:
    """Run code when a hub is stopping.

    Called first thing on shutdown, while the scheduler, the cache and the store still work.

    :param hub: the stopping :class:`~homelab_core.Hub`.
    :return: None or an awaitable, which the hub awaits.
    """


@hookspec
def metrics_collected(instance_id: str, metrics: Sequence[Metric]) -> Any:
    """Receive the metrics of every successful collection (for exporters and forwarders).

    Called after each successful run that returned metrics, once they are validated,
    cached, broadcast and queued for the store. Runs in the scheduler's task: keep it
    quick, and move slow work to a task of your own.

    :param instance_id: the id of the instance that collected.
    :param metrics: the validated metrics, each with its timestamp set.
    :return: None or an awaitable, which the hub awaits.
    """


@hookspec
def health_changed(instance_id: str, old: Health, new: Health) -> Any:
    """Be told when an instance's health state changes (for notifiers).

    Called once per change of :attr:`Health.state` (``ok`` to ``failing`` and back, to
    ``disabled`` ...), not on every run.

    :param instance_id: the id of the instance.
    :param old: the health before the change.
    :param new: the health after the change.
    :return: None or an awaitable, which the hub awaits.
    """


@hookspec
def execution_finished(execution: Execution) -> Any:
    """Receive the record of every run, including failed, timed-out and skipped ones.

    Called after each run of an instance ends, and for each run the scheduler skips.

    :param execution: the :class:`~homelab_core.Execution` record.
    :return: None or an awaitable, which the hub awaits.
    """
