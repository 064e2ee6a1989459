"""``/ws/metrics``: the live stream, through Quart's test client on a real hub and store.

Close codes are read over plain ASGI (Quart 0.23's test client does not report them), a
stalled socket is a stand-in connection, and the client of ``docs/websocket.md`` runs
against a real ``homelab serve``.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
import math
import os
import re
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

import anyio
import attrs
import httpx
import pytest
from quart import Quart
from quart.testing import WebsocketResponseError
from services import free_port

from homelab_core import (
    Event,
    Execution,
    ExecutionFinished,
    Health,
    HealthChanged,
    HealthState,
    InstanceChanged,
    InstanceSettings,
    InstanceState,
    Metric,
    MetricsCollected,
    Plugin,
    PluginManager,
    __version__,
    hookimpl,
)
from homelab_core.config import ServerSettings
from homelab_core.events import EventType
from homelab_core.web import HomelabWeb, create_app, extension
from homelab_core.web.extension import stream_settings
from homelab_core.web.ws import MetricStream, QuartConnection
from homelab_core.web.ws_protocol import EVERYTHING, MAX_MESSAGE_BYTES, make_frame
from homelab_core.web.ws_replay import Replay

pytestmark = pytest.mark.anyio

PATH = "/ws/metrics"
TOKEN = "s3cret-token"
AUTH_ALL = ServerSettings(api_token=TOKEN, auth="all")
Build = Callable[..., Quart]


class Gauges(Plugin):
    """Reports a few host-like gauges. Async throughout: no worker threads to wait for."""

    name = "gauges"
    default_interval = 0.1

    async def setup(self) -> None:
        pass

    async def collect(self) -> list[Metric]:
        return [Metric("cpu.user", 1), Metric("cpu.system", 2), Metric("mem.used", 3)]

    async def health(self) -> None:
        return None

    async def teardown(self) -> None:
        pass


class WsTestPlugins:
    @hookimpl
    def register_plugins(self, register: Callable[[type[Plugin]], None]) -> None:
        register(Gauges)


@pytest.fixture
def build(manager: PluginManager, make_settings: Any, monkeypatch: pytest.MonkeyPatch) -> Build:
    """An app like ``homelab serve``'s on the test plugins; keywords configure MetricStream."""
    manager.register(WsTestPlugins(), name="ws-test-plugins")

    def build_app(
        *instances: InstanceSettings, server: ServerSettings | None = None, **options: Any
    ) -> Quart:
        server = server or ServerSettings()
        # Options that [server] settings carry go there (the settings win over a partial).
        for setting, option in extension.STREAM_SETTINGS.items():
            if option in options:
                setattr(server, setting, options.pop(option))
        monkeypatch.setattr(extension, "MetricStream", functools.partial(MetricStream, **options))
        settings = make_settings(*instances, server=server)
        return create_app(settings, plugin_manager=manager)

    return build_app


def idle(instance_id: str) -> InstanceSettings:
    """A disabled instance: it exists (snapshots, filters) but publishes nothing by itself."""
    return InstanceSettings(id=instance_id, type="gauges", enabled=False)


def web(app: Quart) -> HomelabWeb:
    return app.extensions["homelab"]  # type: ignore[no-any-return]


def stream(app: Quart) -> MetricStream:
    running = web(app).stream
    assert running is not None
    return running


def typed(kind: str, plugin_id: str, data: Any) -> Event:
    """The bus event whose wire message has this type and data."""
    if kind == "metrics":
        return MetricsCollected(plugin_id, [Metric(**m) for m in data])
    if kind == "status":
        return HealthChanged(plugin_id, Health(), Health(**{"state": HealthState.OK, **data}))
    if kind == "execution":
        fields = {"instance_id": plugin_id, "started_at": 1.0, "duration": 0.0, **data}
        return ExecutionFinished(plugin_id, Execution(**fields))
    return InstanceChanged(plugin_id, data["enabled"], InstanceState.STOPPED)


def publish(app: Quart, kind: str, plugin_id: str, data: Any) -> None:
    web(app).hub.bus.publish(typed(kind, plugin_id, data))


def metric(name: str, value: float = 1.0) -> dict[str, Any]:
    return Metric(name, value, timestamp=1.0).to_dict()


async def receive(ws: Any) -> dict[str, Any]:
    return json.loads(await ws.receive())  # type: ignore[no-any-return]


async def receive_type(ws: Any, kind: str) -> dict[str, Any]:
    """The next message of type ``kind``, skipping others."""
    while (message := await receive(ws))["type"] != kind:
        pass
    return message


async def send(ws: Any, **message: Any) -> None:
    await ws.send(json.dumps(message))


class Closed(Exception):
    """The server closed the WebSocket with ``code``."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


class AsgiWebsocket:
    """A WebSocket client that speaks ASGI to the app, for the tests of close codes.

    Quart 0.23's test client does not report the server's close (0.22's raises an
    exception); ASGI itself does, on every version.
    """

    def __init__(self) -> None:
        self._to_app, self._app_receive = anyio.create_memory_object_stream[Any](math.inf)
        self._app_send, self._from_app = anyio.create_memory_object_stream[Any](math.inf)

    @classmethod
    @asynccontextmanager
    async def connect(
        cls, app: Quart, headers: dict[str, str] | None = None
    ) -> AsyncIterator[AsgiWebsocket]:
        ws = cls()
        scope = {
            "type": "websocket",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "scheme": "ws",
            "path": PATH,
            "raw_path": PATH.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()],
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 8765),
            "subprotocols": [],
            "extensions": {"websocket.http.response": {}},
            "state": {},
        }
        ws._to_app.send_nowait({"type": "websocket.connect"})
        with ws._to_app, ws._app_receive, ws._app_send, ws._from_app:
            async with anyio.create_task_group() as tg:
                tg.start_soon(app, scope, ws._app_receive.receive, ws._app_send.send)
                try:
                    yield ws
                finally:
                    ws._to_app.send_nowait({"type": "websocket.disconnect", "code": 1000})

    async def send(self, data: str) -> None:
        self._to_app.send_nowait({"type": "websocket.receive", "text": data})

    async def receive(self) -> str:
        """The next text message; :class:`Closed` once the server closes."""
        while True:
            message = await self._from_app.receive()
            if message["type"] == "websocket.send":
                return str(message["text"])
            if message["type"] == "websocket.close":
                raise Closed(message.get("code", 1000))


async def close_code(ws: AsgiWebsocket) -> int:
    """Read until the server closes; the close code."""
    with pytest.raises(Closed) as closed:
        while True:
            await ws.receive()
    return closed.value.code


async def until(condition: Callable[[], Any]) -> None:
    """Poll ``condition`` (its result may be awaitable) until it is true."""
    while True:
        result = condition()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        await anyio.sleep(0.01)


@asynccontextmanager
async def connected(app: Quart, **kwargs: Any) -> AsyncIterator[Any]:
    """A WebSocket on the running app, its ``hello`` already read."""
    async with app.test_client().websocket(PATH, **kwargs) as ws:
        assert (await receive(ws))["type"] == "hello"
        yield ws


# -- connecting ----------------------------------------------------------------------------


async def test_hello_greets_with_version_seq_heartbeat_and_auth_flag(build: Build) -> None:
    app = build(heartbeat=7.5)
    with anyio.fail_after(10):
        async with app.test_app(), app.test_client().websocket(PATH) as ws:
            hello = await receive(ws)
    assert hello == {
        "type": "hello",
        "version": __version__,
        "seq": 0,
        "heartbeat": 7.5,
        "auth_required": False,
        "stream": hello["stream"],
    }
    assert isinstance(hello["stream"], str) and hello["stream"]


async def test_the_stream_is_mounted_under_the_extension_prefix(
    manager: PluginManager, make_settings: Any
) -> None:
    app = Quart(__name__)
    HomelabWeb(app, settings=make_settings(), plugin_manager=manager, url_prefix="/homelab")
    with anyio.fail_after(10):
        async with app.test_app(), app.test_client().websocket("/homelab/ws/metrics") as ws:
            assert (await receive(ws))["type"] == "hello"


async def test_the_stream_refuses_connections_while_the_app_is_not_serving(
    build: Build,
) -> None:
    app = build()
    with anyio.fail_after(10), pytest.raises(WebsocketResponseError) as refused:
        async with app.test_client().websocket(PATH) as ws:
            await ws.receive()
    assert refused.value.response.status_code == 503


async def test_clients_count_follows_connections(build: Build) -> None:
    app = build()
    with anyio.fail_after(10):
        async with app.test_app():
            assert stream(app).clients == 0
            async with connected(app):
                async with connected(app):
                    assert stream(app).clients == 2
                await until(lambda: stream(app).clients == 1)
            await until(lambda: stream(app).clients == 0)


async def test_shutdown_closes_clients_with_going_away(build: Build) -> None:
    app = build()
    test_app = app.test_app()
    with anyio.fail_after(10):
        await test_app.startup()
        async with AsgiWebsocket.connect(app) as ws:
            assert (await receive(ws))["type"] == "hello"
            await test_app.shutdown()
            assert await close_code(ws) == 1001


async def test_ping_gets_pong(build: Build) -> None:
    app = build()
    with anyio.fail_after(10):
        async with app.test_app(), connected(app) as ws:
            await send(ws, type="ping")
            assert await receive(ws) == {"type": "pong"}


async def test_a_quiet_connection_gets_heartbeats(build: Build) -> None:
    app = build(heartbeat=0.2)
    with anyio.fail_after(10):
        async with app.test_app(), app.test_client().websocket(PATH) as ws:
            hello = await receive(ws)
            start = anyio.current_time()
            beat = await receive(ws)
            assert anyio.current_time() - start >= 0.15
            assert beat["type"] == "heartbeat"
            assert beat["seq"] == hello["seq"]
            assert isinstance(beat["ts"], float)
            assert (await receive(ws))["type"] == "heartbeat"


# -- events --------------------------------------------------------------------------------


async def test_running_plugins_send_metrics_status_and_execution_events_in_seq_order(
    build: Build,
) -> None:
    app = build(idle("alpha"))
    with anyio.fail_after(10):
        async with app.test_app(), app.test_client().websocket(PATH) as ws:
            seq = (await receive(ws))["seq"]
            await web(app).hub.set_enabled("alpha", True)
            seen: dict[str, dict[str, Any]] = {}
            while (
                not {"plugin", "metrics", "execution"} <= set(seen)
                or seen.get("status", {}).get("data", {}).get("state") != "ok"
            ):
                event = await receive(ws)
                assert event["seq"] == seq + 1, "an unfiltered client gets every seq, in order"
                seq = event["seq"]
                assert event["plugin_id"] == "alpha"
                assert isinstance(event["ts"], float)
                seen[event["type"]] = event
    assert seen["plugin"]["data"]["enabled"] is True
    assert seen["plugin"]["data"]["state"] in ("setting_up", "ready")
    assert seen["metrics"]["data"][0]["name"] == "cpu.user"
    assert seen["execution"]["data"]["status"] == "ok"


@attrs.frozen
class Unknown(Event):
    """An event the wire has no form for."""

    type: ClassVar[EventType] = "metrics"


async def test_an_event_that_cannot_be_encoded_is_skipped(build: Build) -> None:
    app = build()
    with anyio.fail_after(10):
        async with app.test_app(), app.test_client().websocket(PATH) as ws:
            seq = (await receive(ws))["seq"]
            web(app).hub.bus.publish(Unknown("x"))
            publish(app, "status", "x", {"state": "ok"})
            event = await receive(ws)
    assert (event["type"], event["seq"]) == ("status", seq + 1)


# -- subscriptions -------------------------------------------------------------------------


async def test_subscribe_answers_with_a_snapshot_of_the_chosen_plugins_and_metrics(
    build: Build,
) -> None:
    app = build(
        InstanceSettings(id="node1", type="gauges"),
        InstanceSettings(id="node2", type="gauges"),
        idle("spare"),
    )
    with anyio.fail_after(10):
        async with app.test_app(), connected(app) as ws:
            hub = web(app).hub
            await until(functools.partial(hub.latest, "node1"))
            await send(ws, type="subscribe", plugins=["node1", "spare"], metrics=["cpu.*"])
            snap = await receive_type(ws, "snapshot")
    assert snap["resumed"] is False
    assert isinstance(snap["seq"], int)
    assert set(snap["plugins"]) == {"node1", "spare"}
    node1 = snap["plugins"]["node1"]
    assert node1["status"]["state"] == "ok"
    assert [m["name"] for m in node1["metrics"]] == ["cpu.system", "cpu.user"]
    assert node1["metrics"][0] == {**node1["metrics"][0], "value": 2.0, "labels": {}}
    assert snap["plugins"]["spare"] == {"status": hub.health("spare").to_dict(), "metrics": []}


async def test_subscribe_to_plugins_sends_only_their_events(build: Build) -> None:
    app = build(
        InstanceSettings(id="node1", type="gauges"), InstanceSettings(id="node2", type="gauges")
    )
    with anyio.fail_after(10):
        async with app.test_app(), connected(app) as ws:
            await send(ws, type="subscribe", plugins=["node2"])
            snap = await receive_type(ws, "snapshot")
            events = [await receive(ws) for _ in range(12)]
    assert set(snap["plugins"]) == {"node2"}
    assert {e["plugin_id"] for e in events} == {"node2"}
    assert {"metrics", "execution"} <= {e["type"] for e in events}
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(seqs) and seqs[0] > snap["seq"]


async def test_metric_patterns_keep_only_matching_metrics_of_an_event(build: Build) -> None:
    app = build()
    with anyio.fail_after(10):
        async with app.test_app(), connected(app) as ws:
            await send(ws, type="subscribe", metrics=["cpu.*", "load.?m"])
            await receive_type(ws, "snapshot")
            publish(
                app, "metrics", "x", [metric("cpu.user"), metric("mem.used"), metric("load.1m")]
            )
            event = await receive(ws)
    assert [m["name"] for m in event["data"]] == ["cpu.user", "load.1m"]


async def test_a_metrics_event_without_a_matching_metric_is_not_sent(build: Build) -> None:
    app = build()
    with anyio.fail_after(10):
        async with app.test_app(), connected(app) as ws:
            await send(ws, type="subscribe", metrics=["cpu.*"])
            await receive_type(ws, "snapshot")
            publish(app, "metrics", "x", [metric("mem.used")])
            publish(app, "metrics", "x", [metric("cpu.user")])
            first = await receive(ws)
    assert [m["name"] for m in first["data"]] == ["cpu.user"]


async def test_metric_patterns_do_not_filter_other_events(build: Build) -> None:
    app = build()
    with anyio.fail_after(10):
        async with app.test_app(), connected(app) as ws:
            await send(ws, type="subscribe", metrics=["cpu.*"])
            await receive_type(ws, "snapshot")
            publish(app, "execution", "x", {"status": "ok"})
            publish(app, "status", "x", {"state": "failing"})
            kinds = [(await receive(ws))["type"] for _ in range(2)]
    assert kinds == ["execution", "status"]


async def test_subscribing_again_replaces_the_filter(build: Build) -> None:
    app = build(idle("one"), idle("two"))
    with anyio.fail_after(10):
        async with app.test_app(), connected(app) as ws:
            await send(ws, type="subscribe", plugins=["one"])
            await receive_type(ws, "snapshot")
            await send(ws, type="subscribe", plugins=["two"])
            snap = await receive_type(ws, "snapshot")
            publish(app, "status", "one", {"state": "ok"})
            publish(app, "status", "two", {"state": "ok"})
            event = await receive(ws)
    assert set(snap["plugins"]) == {"two"}
    assert event["plugin_id"] == "two"


# -- batching ------------------------------------------------------------------------------


def unbatched(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The messages, those inside ``batch`` messages in their place."""
    return [m for message in messages for m in message.get("messages", [message])]


async def test_a_batching_client_gets_what_arrived_together_in_one_message(build: Build) -> None:
    app = build(idle("one"))
    with anyio.fail_after(10):
        async with app.test_app(), connected(app) as ws:
            await send(ws, type="subscribe", batch=0.3)
            snap = await receive_type(ws, "snapshot")
            for n in range(40):
                publish(app, "status", "one", {"consecutive_failures": n})
            batch = await receive(ws)
            await send(ws, type="ping")
            pong = await receive(ws)
    assert batch["type"] == "batch"
    events = batch["messages"]
    # Everything published within the 0.3 s arrives in this one message, numbered in order.
    assert [e["seq"] for e in events] == list(range(snap["seq"] + 1, snap["seq"] + 41))
    assert [e["data"]["consecutive_failures"] for e in events] == list(range(40))
    assert pong == {"type": "pong"}  # a lone message is sent as itself


async def test_the_first_message_after_a_quiet_spell_is_not_held_back(build: Build) -> None:
    app = build(idle("one"))
    with anyio.fail_after(10):
        async with app.test_app(), connected(app) as ws:
            await send(ws, type="subscribe", batch=1.0)
            with anyio.fail_after(0.5):  # a batch held back would take 1 s
                await receive_type(ws, "snapshot")


async def test_a_batch_is_split_at_its_message_limit_and_nothing_is_lost(
    build: Build, monkeypatch: pytest.MonkeyPatch
) -> None:
    from homelab_core.web import ws_protocol

    monkeypatch.setattr(ws_protocol, "BATCH_MESSAGES", 7)
    app = build(idle("one"))
    with anyio.fail_after(10):
        async with app.test_app(), connected(app) as ws:
            await send(ws, type="subscribe", batch=0.2)
            snap = await receive_type(ws, "snapshot")
            for n in range(30):
                publish(app, "status", "one", {"consecutive_failures": n})
            messages = [await receive(ws) for _ in range(5)]
    assert [len(m["messages"]) for m in messages[:4]] == [7, 7, 7, 7]
    assert [e["seq"] for e in unbatched(messages)] == list(range(snap["seq"] + 1, snap["seq"] + 31))


async def test_a_resume_is_replayed_in_batches_in_order(build: Build) -> None:
    app = build(idle("one"))
    with anyio.fail_after(10):
        async with app.test_app():
            since = stream(app).seq
            for n in range(25):
                publish(app, "status", "one", {"consecutive_failures": n})
            await until(lambda: stream(app).seq == since + 25)
            async with connected(app) as ws:
                await send(ws, type="subscribe", since=since, batch=0.05)
                first = await receive(ws)
    assert first["type"] == "batch"
    snap, *events = first["messages"]
    assert (snap["type"], snap["resumed"]) == ("snapshot", True)
    assert [e["seq"] for e in events] == list(range(since + 1, since + 26))


async def test_a_batching_client_is_closed_promptly_when_the_server_stops(build: Build) -> None:
    app = build(idle("one"))
    test_app = app.test_app()
    with anyio.fail_after(10):
        await test_app.startup()
        async with AsgiWebsocket.connect(app) as ws:
            assert (await receive(ws))["type"] == "hello"
            await ws.send(json.dumps({"type": "subscribe", "batch": 1.0}))
            assert (await receive(ws))["type"] == "snapshot"
            publish(app, "status", "one", {})  # the sender now gathers for 1 s
            await anyio.sleep(0.05)
            with anyio.fail_after(1.9):  # within the close timeout (2 s)
                await test_app.shutdown()
                code = await close_code(ws)
    assert code == 1001


async def test_subscribing_without_batch_stops_batching(build: Build) -> None:
    app = build(idle("one"))
    with anyio.fail_after(10):
        async with app.test_app(), connected(app) as ws:
            await send(ws, type="subscribe", batch=0.2)
            await receive_type(ws, "snapshot")
            await send(ws, type="subscribe")
            await receive_type(ws, "snapshot")
            publish(app, "status", "one", {"consecutive_failures": 1})
            publish(app, "status", "one", {"consecutive_failures": 2})
            events = [await receive(ws) for _ in range(2)]
    assert [e["type"] for e in events] == ["status", "status"]


# -- resuming ------------------------------------------------------------------------------


async def test_resume_replays_each_missed_event_once_in_order(build: Build) -> None:
    app = build(idle("one"))
    with anyio.fail_after(10):
        async with app.test_app():
            async with connected(app) as ws:
                publish(app, "status", "one", {"consecutive_failures": 0})
                last = (await receive(ws))["seq"]
            for n in range(1, 6):
                publish(app, "status", "one", {"consecutive_failures": n})
            await until(lambda: stream(app).seq == last + 5)
            async with connected(app) as ws:
                await send(ws, type="subscribe", since=last)
                snap = await receive(ws)
                replayed = [await receive(ws) for _ in range(5)]
                publish(app, "status", "one", {"consecutive_failures": 6})
                live = await receive(ws)
    assert snap == {"type": "snapshot", "seq": last, "resumed": True, "plugins": {}}
    assert [(e["seq"], e["data"]["consecutive_failures"]) for e in replayed] == [
        (last + n, n) for n in range(1, 6)
    ]
    assert (live["seq"], live["data"]["consecutive_failures"]) == (last + 6, 6)


async def test_resume_replays_through_the_new_filter(build: Build) -> None:
    app = build(idle("one"), idle("two"))
    with anyio.fail_after(10):
        async with app.test_app():
            since = stream(app).seq
            publish(app, "status", "one", {"consecutive_failures": 1})
            publish(app, "status", "two", {"consecutive_failures": 2})
            await until(lambda: stream(app).seq == since + 2)
            async with connected(app) as ws:
                await send(ws, type="subscribe", plugins=["two"], since=since)
                assert (await receive(ws))["resumed"] is True
                event = await receive(ws)
    assert (event["seq"], event["plugin_id"]) == (since + 2, "two")


async def test_resume_from_a_seq_older_than_the_replay_buffer_gets_a_fresh_snapshot(
    build: Build,
) -> None:
    app = build(idle("one"), replay_size=5)
    with anyio.fail_after(10):
        async with app.test_app():
            since = stream(app).seq
            for n in range(10):
                publish(app, "status", "one", {"consecutive_failures": n})
            await until(lambda: stream(app).seq == since + 10)
            async with connected(app) as ws:
                await send(ws, type="subscribe", since=since)
                snap = await receive(ws)
                publish(app, "status", "one", {"consecutive_failures": 10})
                live = await receive(ws)
    assert snap["resumed"] is False
    assert snap["seq"] == since + 10
    assert snap["plugins"]["one"]["status"]["state"] == "disabled"
    assert live["seq"] == since + 11, "nothing is replayed after a fresh snapshot"


async def test_resume_replays_only_the_metrics_the_new_patterns_match(build: Build) -> None:
    app = build(idle("one"))
    with anyio.fail_after(10):
        async with app.test_app():
            since = stream(app).seq
            publish(app, "metrics", "one", [metric("cpu.user", 1), metric("mem.used", 2)])
            publish(app, "metrics", "one", [metric("mem.used", 3)])
            publish(app, "metrics", "one", [metric("cpu.user", 4)])
            await until(lambda: stream(app).seq == since + 3)
            async with connected(app) as ws:
                await send(ws, type="subscribe", metrics=["cpu.*"], since=since)
                assert (await receive(ws))["resumed"] is True
                replayed = [await receive(ws) for _ in range(2)]
    assert [(e["seq"], [(m["name"], m["value"]) for m in e["data"]]) for e in replayed] == [
        (since + 1, [("cpu.user", 1.0)]),
        (since + 3, [("cpu.user", 4.0)]),
    ]


@pytest.mark.parametrize("case", ["future", "other stream"])
async def test_resume_that_cannot_be_honoured_gets_a_fresh_snapshot(
    build: Build, case: str
) -> None:
    app = build(idle("one"))
    with anyio.fail_after(10):
        async with app.test_app(), connected(app) as ws:
            publish(app, "status", "one", {"consecutive_failures": 1})
            seq = (await receive(ws))["seq"]
            if case == "future":
                await send(ws, type="subscribe", since=seq + 100)
            else:
                await send(ws, type="subscribe", since=seq - 1, stream="an-earlier-run")
            snap = await receive(ws)
    assert (snap["resumed"], snap["seq"], list(snap["plugins"])) == (False, seq, ["one"])


#: The default byte budget of the replay buffer (``[server] websocket_replay_bytes``).
REPLAY_BYTES = 8 * 1024 * 1024


def kept_bytes(replay: Any) -> int:
    """What the replay buffer's kept events take: the memory of their texts."""
    return sum(sys.getsizeof(entry[4]) for entry in replay._entries)


def big_metrics(count: int = 50, size: int = 4000) -> list[Metric]:
    """A collection whose ``metrics`` event is about ``count * size`` bytes of JSON."""
    return [Metric("big", 1.0, labels={"i": str(i), "blob": "x" * size}) for i in range(count)]


async def test_the_replay_buffer_is_bounded_by_bytes_with_no_client_connected(
    build: Build,
) -> None:
    """Issue 10, item 7: 60 events of 200 kB (12 MB) with the default settings and nobody
    connected. The buffer keeps only the newest that fit its byte budget; a resume from
    before them gets a fresh snapshot, one from within them the missed events."""
    app = build(idle("one"))
    metrics = big_metrics()
    with anyio.fail_after(15):
        async with app.test_app():
            running = stream(app)
            start = running.seq
            for _ in range(60):
                web(app).hub.bus.publish(MetricsCollected("one", metrics))
            await until(lambda: running.seq == start + 60)
            kept, size = len(running.replay._entries), kept_bytes(running.replay)
            exposed = await (await app.test_client().get("/metrics")).get_data(as_text=True)
            async with connected(app) as ws:
                await send(ws, type="subscribe", since=start)
                too_old = await receive(ws)
            async with connected(app) as ws:
                await send(ws, type="subscribe", since=start + 58)
                recent = await receive(ws)
                replayed = [(await receive(ws))["seq"] for _ in range(2)]
    assert size <= REPLAY_BYTES, f"{kept} events of {size} bytes kept"
    assert 30 <= kept < 60, "the newest events that fit are kept"
    assert running.replay.bytes == size
    assert f"\nhomelab_core_websocket_replay_bytes {float(size)!r}\n" in exposed
    assert (too_old["resumed"], too_old["seq"]) == (False, start + 60)
    assert list(too_old["plugins"]) == ["one"]
    assert (recent["resumed"], recent["seq"]) == (True, start + 58)
    assert replayed == [start + 59, start + 60]


def test_the_replay_buffer_forgets_the_oldest_events_beyond_its_byte_budget() -> None:
    budget = 100_000
    replay = Replay(10_000, max_bytes=budget)
    text = "x" * 9_000
    for seq in range(1, 51):
        replay.record(make_frame(seq, "metrics", "one", 1.0, text))
    assert replay.bytes == kept_bytes(replay) <= budget
    kept = len(replay._entries)
    assert kept == budget // sys.getsizeof(make_frame(1, "metrics", "one", 1.0, text).text)
    assert replay.floor == 50 - kept
    assert replay.resumable(50 - kept, None)
    assert not replay.resumable(50 - kept - 1, None)
    assert [int(json.loads(t)["seq"]) for t in replay.after(48, EVERYTHING)] == [49, 50]


def test_an_event_larger_than_the_whole_budget_is_not_kept() -> None:
    replay = Replay(10, max_bytes=1_000)
    replay.record(make_frame(1, "status", "one", 1.0, {}))
    replay.record(make_frame(2, "metrics", "one", 1.0, "x" * 5_000))
    assert (replay.bytes, len(replay._entries), replay.floor, replay.seq) == (0, 0, 2, 2)
    assert replay.resumable(2, None) and not replay.resumable(1, None)
    replay.record(make_frame(3, "status", "one", 1.0, {}))
    assert [json.loads(t)["seq"] for t in replay.after(2, EVERYTHING)] == [3]


def test_stream_options_come_from_the_server_settings_then_the_arguments() -> None:
    server = ServerSettings(websocket_queue_size=8, websocket_heartbeat=5.0)
    settings = SimpleNamespace(server=server)
    expected = {
        "queue_size": 8,
        "heartbeat": 5.0,
        "replay_size": 10_000,
        "replay_bytes": REPLAY_BYTES,
        "queue_bytes": QUEUE_BYTES,
    }
    assert stream_settings(settings) == expected
    assert stream_settings(settings, {"queue_size": 2}) == {**expected, "queue_size": 2}


class PublicWebsocket:
    """A websocket with only the public methods."""

    async def send(self, data: str) -> None: ...

    async def receive(self) -> str:
        return ""

    async def close(self, code: int, reason: str = "") -> None: ...


class QuartLikeWebsocket(PublicWebsocket):
    """Quart's: ``send`` ends in ``_send``."""

    async def _send(self, data: str) -> None: ...


def test_the_stream_writes_through_quarts_inner_send_when_there_is_one() -> None:
    quart_like = QuartLikeWebsocket()
    conn = QuartConnection(quart_like)
    assert conn.send == quart_like._send
    assert (conn.receive, conn.close) == (quart_like.receive, quart_like.close)
    public = PublicWebsocket()
    assert QuartConnection(public).send == public.send


# -- backpressure --------------------------------------------------------------------------


class StalledConnection:
    """A client whose socket takes nothing until ``unblock`` is set."""

    def __init__(self) -> None:
        self.unblock = anyio.Event()
        self.received: list[dict[str, Any]] = []

    async def send(self, data: str) -> None:
        await self.unblock.wait()
        self.received.append(json.loads(data))

    async def receive(self) -> str:
        await anyio.sleep_forever()
        raise AssertionError

    async def close(self, code: int, reason: str = "") -> None:
        pass


async def test_a_stalled_client_is_told_what_it_missed_while_others_get_everything(
    build: Build,
) -> None:
    app = build(queue_size=64)
    rounds, burst = 10, 40
    with anyio.fail_after(20):
        async with app.test_app(), connected(app) as fast, anyio.create_task_group() as tg:
            running = stream(app)
            stalled = StalledConnection()
            serve = functools.partial(running.serve, stalled, server=web(app).settings.server)
            tg.start_soon(serve)
            await until(lambda: running.clients == 2)
            first = running.seq + 1
            for _ in range(rounds):
                for _ in range(burst):
                    publish(app, "status", "x", {})
                await anyio.sleep(0.02)
            last = first + rounds * burst - 1
            fast_seqs = [(await receive(fast))["seq"] for _ in range(rounds * burst)]
            stalled.unblock.set()
            await until(lambda: stalled.received and stalled.received[-1]["type"] == "lagged")
            publish(app, "status", "x", {})
            await until(lambda: stalled.received[-1]["type"] == "status")
            tg.cancel_scope.cancel()
    assert fast_seqs == list(range(first, last + 1))
    hello, *events, lag, after = stalled.received
    assert hello["type"] == "hello"
    # The hello was stuck in the stalled send; the queue held the next 64 messages.
    assert [e["seq"] for e in events] == list(range(first, first + 64))
    assert lag == {"type": "lagged", "missed": rounds * burst - 64, "seq": last}
    assert after["seq"] == last + 1
    assert running.dropped == rounds * burst - 64


#: The default byte budget of a client's queue (``[server] websocket_queue_bytes``).
QUEUE_BYTES = 4 * 1024 * 1024


def waiting_bytes(client: Any) -> int:
    return sum(sys.getsizeof(item) for item in client.outbox._items if isinstance(item, str))


async def test_a_stalled_clients_queue_is_bounded_by_bytes(build: Build) -> None:
    """40 events of 200 kB (8 MB) for a client that reads nothing: its queue holds what
    fits its byte budget (plus the one event that crossed it), the rest is counted as
    missed and announced with ``lagged`` once the client reads again."""
    app = build()
    metrics = big_metrics()
    with anyio.fail_after(20):
        async with app.test_app(), anyio.create_task_group() as tg:
            running = stream(app)
            stalled = StalledConnection()
            tg.start_soon(
                functools.partial(running.serve, stalled, server=web(app).settings.server)
            )
            await until(lambda: running.clients == 1)
            [client] = running._clients
            first = running.seq + 1
            for _ in range(40):
                web(app).hub.bus.publish(MetricsCollected("x", metrics))
            await until(lambda: running.seq == first + 39)
            queued, size = len(client.outbox), waiting_bytes(client)
            assert size <= QUEUE_BYTES + size // queued, f"{queued} events of {size} bytes wait"
            stalled.unblock.set()
            await until(lambda: stalled.received and stalled.received[-1]["type"] == "lagged")
            web(app).hub.bus.publish(HealthChanged("x", Health(), Health()))
            await until(lambda: stalled.received[-1]["type"] == "status")
            tg.cancel_scope.cancel()
    hello, *events, lag, after = stalled.received
    assert hello["type"] == "hello"
    assert [e["seq"] for e in events] == list(range(first, first + queued))
    assert lag == {"type": "lagged", "missed": 40 - queued, "seq": first + 39}
    assert after["seq"] == first + 40
    assert running.dropped == 40 - queued


async def test_events_the_stream_could_not_take_from_the_bus_are_reported_as_lagged(
    build: Build,
) -> None:
    app = build(bus_buffer=8)
    with anyio.fail_after(10):
        async with app.test_app(), connected(app) as ws:
            running = stream(app)
            start = running.seq
            for _ in range(20):  # in one go: the bus keeps about 8 for the stream
                publish(app, "status", "x", {})
            received = []
            while not received or received[-1]["type"] != "lagged":
                received.append(await receive(ws))
            publish(app, "status", "x", {})
            after = await receive(ws)
            await send(ws, type="subscribe", since=received[-2]["seq"])
            snap = await receive(ws)
    *events, lag = received
    kept = len(events)
    assert [e["seq"] for e in events] == list(range(start + 1, start + kept + 1))
    assert lag == {"type": "lagged", "missed": 20 - kept, "seq": start + 20}
    assert running.lost == 20 - kept >= 10
    assert after["seq"] == start + 21
    assert (snap["resumed"], snap["seq"]) == (False, start + 21), "the gap cannot be replayed"


# -- malformed input -----------------------------------------------------------------------

MALFORMED = [
    pytest.param("{not json", "invalid_message", id="not-json"),
    pytest.param("", "invalid_message", id="empty"),
    pytest.param(b"\xff\xfe\xfd", "invalid_message", id="binary-not-utf8"),
    pytest.param("[" * 50_000, "invalid_message", id="deeply-nested"),
    pytest.param("[1, 2]", "invalid_message", id="not-an-object"),
    pytest.param('"ping"', "invalid_message", id="a-string"),
    pytest.param('{"plugins": []}', "invalid_message", id="no-type"),
    pytest.param('{"type": 7}', "invalid_message", id="type-not-a-string"),
    pytest.param('{"type": "unsubscribe"}', "unknown_type", id="unknown-type"),
    pytest.param('{"type": "subscribe", "plugins": "one"}', "invalid_message", id="plugins-str"),
    pytest.param('{"type": "subscribe", "plugins": [1]}', "invalid_message", id="plugins-ints"),
    pytest.param('{"type": "subscribe", "metrics": [null]}', "invalid_message", id="metrics"),
    pytest.param('{"type": "subscribe", "since": -1}', "invalid_message", id="since-negative"),
    pytest.param('{"type": "subscribe", "since": "3"}', "invalid_message", id="since-str"),
    pytest.param('{"type": "subscribe", "since": true}', "invalid_message", id="since-bool"),
    pytest.param('{"type": "subscribe", "since": 1.5}', "invalid_message", id="since-float"),
    pytest.param('{"type": "subscribe", "stream": 5}', "invalid_message", id="stream-int"),
    pytest.param('{"type": "subscribe", "batch": 2}', "invalid_message", id="batch-too-long"),
    pytest.param('{"type": "subscribe", "batch": -0.1}', "invalid_message", id="batch-negative"),
    pytest.param('{"type": "subscribe", "batch": "1"}', "invalid_message", id="batch-str"),
    pytest.param('{"type": "subscribe", "batch": true}', "invalid_message", id="batch-bool"),
    pytest.param('{"type": "subscribe", "plugins": ["nope"]}', "unknown_plugin", id="unknown-id"),
    pytest.param('{"type": "auth"}', "invalid_message", id="auth-without-token"),
    pytest.param(
        json.dumps({"type": "ping", "pad": "x" * MAX_MESSAGE_BYTES}), "too_large", id="too-large"
    ),
]


@pytest.mark.parametrize(("raw", "code"), MALFORMED)
async def test_malformed_message_gets_an_error_and_the_connection_stays_open(
    build: Build, raw: str | bytes, code: str
) -> None:
    app = build(idle("one"))
    with anyio.fail_after(10):
        async with app.test_app(), connected(app) as ws:
            await ws.send(raw)
            error = await receive(ws)
            await send(ws, type="ping")
            assert await receive(ws) == {"type": "pong"}
    assert error["type"] == "error"
    assert error["code"] == code
    assert isinstance(error["message"], str) and error["message"]


# -- authentication ------------------------------------------------------------------------


async def test_a_bearer_header_authenticates(build: Build) -> None:
    app = build(server=AUTH_ALL)
    with anyio.fail_after(10):
        async with app.test_app():
            headers = {"Authorization": f"Bearer {TOKEN}"}
            async with app.test_client().websocket(PATH, headers=headers) as ws:
                assert (await receive(ws))["auth_required"] is False
                publish(app, "status", "x", {})
                assert (await receive(ws))["type"] == "status"


async def test_an_auth_message_authenticates(build: Build) -> None:
    app = build(server=AUTH_ALL)
    with anyio.fail_after(10):
        async with app.test_app(), app.test_client().websocket(PATH) as ws:
            hello = await receive(ws)
            assert hello["auth_required"] is True
            await send(ws, type="auth", token=TOKEN)
            assert await receive(ws) == {"type": "authenticated", "seq": hello["seq"]}
            publish(app, "status", "x", {})
            assert (await receive(ws))["type"] == "status"


async def test_without_a_token_messages_are_refused_and_no_events_sent(build: Build) -> None:
    app = build(server=AUTH_ALL)
    with anyio.fail_after(10):
        async with app.test_app(), connected(app) as ws:
            publish(app, "status", "x", {})
            await send(ws, type="subscribe")
            refused = await receive(ws)
            await send(ws, type="ping")
            assert (await receive(ws))["code"] == "unauthorized", "no event came in between"
    assert refused["type"] == "error"
    assert refused["code"] == "unauthorized"


async def test_no_auth_message_in_time_closes_with_4401(build: Build) -> None:
    app = build(server=AUTH_ALL, auth_timeout=0.2)
    with anyio.fail_after(10):
        async with app.test_app(), AsgiWebsocket.connect(app) as ws:
            assert (await receive(ws))["type"] == "hello"
            assert await close_code(ws) == 4401


async def test_a_wrong_token_in_an_auth_message_closes_with_4403(build: Build) -> None:
    app = build(server=AUTH_ALL)
    with anyio.fail_after(10):
        async with app.test_app(), AsgiWebsocket.connect(app) as ws:
            assert (await receive(ws))["type"] == "hello"
            await send(ws, type="auth", token="guess")
            error = await receive(ws)
            assert await close_code(ws) == 4403
    assert (error["type"], error["code"]) == ("error", "forbidden")


async def test_a_wrong_bearer_header_closes_with_4403(build: Build) -> None:
    app = build(server=AUTH_ALL)
    with anyio.fail_after(10):
        async with app.test_app():
            headers = {"Authorization": "Bearer guess"}
            async with AsgiWebsocket.connect(app, headers) as ws:
                assert (await receive(ws))["type"] == "hello"
                error = await receive(ws)
                assert await close_code(ws) == 4403
    assert error["code"] == "forbidden"


async def test_a_token_guarding_writes_only_leaves_the_stream_open(build: Build) -> None:
    app = build(server=ServerSettings(api_token=TOKEN, auth="writes"))
    with anyio.fail_after(10):
        async with app.test_app(), app.test_client().websocket(PATH) as ws:
            assert (await receive(ws))["auth_required"] is False
            await send(ws, type="ping")
            assert await receive(ws) == {"type": "pong"}


# -- the documentation's client ------------------------------------------------------------

DOCS = Path(__file__).resolve().parent.parent / "docs" / "websocket.md"


def docs_client() -> str:
    blocks = re.findall(r"^```python\n(.*?)^```", DOCS.read_text("utf-8"), re.M | re.S)
    assert len(blocks) == 1, "docs/websocket.md should have one python block: the client"
    return str(blocks[0])


async def wait_until_healthy(url: str) -> None:
    async with httpx.AsyncClient() as http:
        while True:
            with contextlib.suppress(httpx.TransportError):
                if (await http.get(f"{url}/api/health")).status_code == 200:
                    return
            await anyio.sleep(0.1)


@pytest.mark.slow
async def test_the_python_client_of_the_docs_prints_live_metrics(tmp_path: Path) -> None:
    (tmp_path / "follow.py").write_text(docs_client(), encoding="utf-8")
    served = tmp_path / "server"
    served.mkdir()
    (served / "homelab.toml").write_text("[plugins.system]\ninterval = 1\n", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOMELAB_")}
    port = free_port()
    serve = [sys.executable, "-m", "homelab_core.cli", "serve", "--port", str(port)]
    follow = [sys.executable, "follow.py", f"ws://127.0.0.1:{port}/ws/metrics", "cpu.*"]
    lines: list[str] = []
    with anyio.fail_after(60), (tmp_path / "serve.log").open("wb") as log:
        async with await anyio.open_process(
            serve, cwd=served, env=env, stdout=log, stderr=log
        ) as server:
            try:
                await wait_until_healthy(f"http://127.0.0.1:{port}")
                async with await anyio.open_process(
                    follow, cwd=tmp_path, env=env, stderr=log
                ) as client:
                    try:
                        assert client.stdout is not None
                        async for chunk in client.stdout:
                            lines += chunk.decode().splitlines()
                            if sum("cpu.percent" in line for line in lines) >= 3:
                                break
                    finally:
                        client.terminate()
            finally:
                server.terminate()
    first = lines[0].split()
    assert first[:2] == ["system", "cpu.percent"]
    assert float(first[2]) >= 0 and first[3] == "%"
    assert all(line.split()[1].startswith("cpu.") for line in lines if line.strip())
