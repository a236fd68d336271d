"""Running `identity serve` as real processes on loopback for multi-process tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def base_env(**overrides: str) -> dict[str, str]:
    """The parent environment without any IDENTITY_ variable, plus `overrides`.

    Rate limits are off unless a test turns them on: load tests sign the same person in
    dozens of times a minute on purpose.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("IDENTITY_")}
    env.update(IDENTITY_RATE_LIMIT_FAILURES="0", IDENTITY_RATE_LIMIT_SUBJECT="0")
    env.update(overrides)
    return env


def run_cli(*args: str, env: Mapping[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "identity", *args],
        env=dict(env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@contextmanager
def serve(env: Mapping[str, str], cwd: Path, *args: str, timeout: float = 30) -> Iterator[Server]:
    port = int(env.get("IDENTITY_PORT") or free_port())
    full_env = {**env, "IDENTITY_PORT": str(port)}
    log = cwd / f"server-{port}.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "identity", "serve", *args],
            env=full_env,
            cwd=cwd,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    server = Server(f"http://127.0.0.1:{port}", process, log)
    try:
        _wait_ready(server, timeout)
        yield server
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_ready(server: Server, timeout: float) -> None:
    try:
        wait_until_ok(server.url + "/readyz", timeout=timeout, process=server.process)
    except RuntimeError as error:
        raise RuntimeError(f"{error}:\n{server.log_text()}") from None


def wait_until_ok(
    url: str,
    *,
    timeout: float = 30,
    process: subprocess.Popen[bytes] | None = None,
    headers: Mapping[str, str] | None = None,
) -> None:
    """Poll `url` until it answers 200; fail early if `process` exits meanwhile."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited with {process.returncode}")
        try:
            if httpx.get(url, timeout=1, headers=headers).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout:g}s")
