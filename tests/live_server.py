"""``homelab serve`` as a real process, for tests that talk to it from outside.

::

    with live_server(tmp_path, config=CONFIG) as server:
        httpx.get(f"{server.url}/api/plugins")

The server runs with ``tmp_path`` as its working directory and an environment without any
``HOMELAB_*`` variable except those the test passes. It is stopped with SIGTERM (then
SIGKILL as a last resort) when the block ends, unless the test stopped it already.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import attrs
import httpx
import pytest
from services import free_port

#: Seconds a server may take to answer ``GET /api/health`` with 200.
READY_TIMEOUT = 60.0
#: Seconds a server may take to exit after SIGTERM or SIGINT.
STOP_TIMEOUT = 30.0
#: The checkout whose code the servers run.
SOURCE_TREE = Path(__file__).resolve().parent.parent
#: The line ``homelab serve`` prints once it serves, with the port it bound.
ANNOUNCEMENT = re.compile(r"Homelab Core serving on http://(\S+):(\d+)")


def serve_command(*args: str) -> list[str]:
    """The command line of ``homelab serve`` with ``args``, run by this interpreter."""
    return [sys.executable, "-m", "homelab_core.cli", "serve", *args]


def server_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment without ``HOMELAB_*`` variables, plus ``extra``.

    The source tree comes first on ``PYTHONPATH``: the server runs the code under test,
    not whatever copy of homelab_core the interpreter has installed.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOMELAB_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SOURCE_TREE), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def sqlite_url(directory: Path, name: str = "homelab.db") -> str:
    """A SQLite database URL for a file in ``directory``."""
    return f"sqlite://{directory / name}"


@attrs.define
class LiveServer:
    """A running ``homelab serve`` process."""

    url: str
    process: subprocess.Popen[bytes]
    port: int
    directory: Path
    stdout_path: Path
    stderr_path: Path
    #: The API token the server was given as ``HOMELAB_API_TOKEN``, if any.
    token: str | None = None

    @property
    def database(self) -> Path:
        """The default SQLite file of the server (``homelab.db`` in its directory)."""
        return self.directory / "homelab.db"

    def stderr(self) -> str:
        """Everything the server wrote to stderr so far."""
        return self.stderr_path.read_text(errors="replace")

    def stdout(self) -> str:
        """Everything the server wrote to stdout so far."""
        return self.stdout_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT) -> int:
        """Send ``sig`` and wait for the exit code; SIGKILL and fail if it does not exit."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                return self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
                pytest.fail(
                    f"homelab serve did not exit within {timeout} s of"
                    f" {signal.Signals(sig).name}; killed it. stderr:\n{self.stderr()}"
                )
        return self.process.returncode


def wait_ready(
    server: LiveServer, timeout: float = READY_TIMEOUT, token: str | None = None
) -> None:
    """Wait until ``GET /api/health`` answers 200; fail with the server's stderr if not.

    ``token``: the bearer token to send (a server with ``auth = "all"`` needs it).
    """
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    # With auth = "all" the health check needs the token too.
    token = token or server.token
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with httpx.Client(timeout=2.0, headers=headers) as client:
        while True:
            code = server.process.poll()
            if code is not None:
                pytest.fail(
                    f"homelab serve exited with {code} before it was ready. stderr:\n"
                    f"{server.stderr()}"
                )
            try:
                response = client.get(f"{server.url}/api/health")
            except httpx.HTTPError as exc:
                last = repr(exc)
            else:
                if response.status_code == 200:
                    break
                last = f"{response.status_code} {response.text}"
            if time.monotonic() > deadline:
                pytest.fail(
                    f"homelab serve was not ready within {timeout} s (last: {last}). stderr:\n"
                    f"{server.stderr()}"
                )
            time.sleep(0.1)
    # A server of someone else on the port would answer too: ours must still be running.
    if server.process.poll() is not None:
        pytest.fail(f"homelab serve exited during startup. stderr:\n{server.stderr()}")


def wait_announced(
    process: subprocess.Popen[bytes], stderr_path: Path, timeout: float = READY_TIMEOUT
) -> int:
    """The port that ``homelab serve`` says it serves on; fail if it exits or stays silent."""
    deadline = time.monotonic() + timeout
    while True:
        found = ANNOUNCEMENT.search(stderr_path.read_text(errors="replace"))
        if found:
            return int(found.group(2))
        code = process.poll()
        if code is not None or time.monotonic() > deadline:
            pytest.fail(
                f"homelab serve did not announce its address (exit code {code}). stderr:\n"
                f"{stderr_path.read_text(errors='replace')}"
            )
        time.sleep(0.05)


@contextmanager
def live_server(
    directory: Path,
    *,
    config: str | None = None,
    args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    port: int | None = None,
    ready_timeout: float = READY_TIMEOUT,
    token: str | None = None,
) -> Iterator[LiveServer]:
    """Run ``homelab serve --port PORT *args`` in ``directory`` until the block ends.

    ``config`` is written to ``directory/homelab.toml`` (found there as the working
    directory's file). The server is reached on 127.0.0.1 whatever it binds; ``token`` is
    sent when waiting for it to be ready (for a config with ``auth = "all"``). With
    ``port=0`` the server chooses a free port, read from the address it announces.
    """
    directory.mkdir(parents=True, exist_ok=True)
    if config is not None:
        (directory / "homelab.toml").write_text(config, encoding="utf-8")
    port = free_port() if port is None else port
    stdout_path = directory / "serve.stdout"
    stderr_path = directory / "serve.stderr"
    with stdout_path.open("wb") as out, stderr_path.open("wb") as err:
        process = subprocess.Popen(
            serve_command("--port", str(port), *args),
            cwd=directory,
            env=server_env(env),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
        )
    if port == 0:
        try:
            port = wait_announced(process, stderr_path, ready_timeout)
        except BaseException:
            process.kill()
            process.wait(timeout=10)
            raise
    server = LiveServer(
        url=f"http://127.0.0.1:{port}",
        process=process,
        port=port,
        directory=directory,
        stdout_path=stdout_path,
        stderr_path=stderr_path,
        token=token or (env or {}).get("HOMELAB_API_TOKEN"),
    )
    try:
        wait_ready(server, ready_timeout, token)
        yield server
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
