"""What stands between the service and its clients or its database, as real processes: Debian's
PgBouncer (transaction pooling in front of the test PostgreSQL) and HAProxy (a round-robin
balancer in front of replicas). Used by the tests and by `bench/run.py --pooler`.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import make_url

from .servers import free_port

# Debian puts both in /usr/sbin, which is not on every user's PATH.
_SBIN = ("/usr/sbin", "/usr/local/sbin")


def find(program: str) -> str | None:
    """The program's path, looked for on PATH and in the sbin directories."""
    return shutil.which(program) or shutil.which(program, path=os.pathsep.join(_SBIN))


def _wait_listening(port: int, process: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited:\n{log.read_text(errors='replace')}")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port} after {timeout:g}s")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass
class PgBouncer:
    port: int
    log: Path

    def url(self, database_url: str) -> str:
        """`database_url` (a PostgreSQL URL the bouncer fronts) with this bouncer's address."""
        return (
            make_url(database_url)
            .set(host="127.0.0.1", port=self.port)
            .render_as_string(hide_password=False)
        )


@contextmanager
def pgbouncer(
    server_url: str, *, pool_size: int = 8, mode: str = "transaction"
) -> Iterator[PgBouncer]:
    """PgBouncer on a free loopback port in front of `server_url`'s server, for every database
    on it, trusting the user of the URL (the test PostgreSQL trusts it too).

    A small server pool (`pool_size` per database and user) so that many client connections
    share few server connections, as behind a managed pooler under load: a statement that
    relies on its server connection outliving a transaction fails here, not by luck.
    """
    program = find("pgbouncer")
    if program is None:
        raise FileNotFoundError("pgbouncer is not installed (apt-get install pgbouncer)")
    server = make_url(server_url)
    work = Path(tempfile.mkdtemp(prefix="identity-pgbouncer-"))
    port = free_port()
    (work / "users.txt").write_text(f'"{server.username or "postgres"}" ""\n')
    lines = [
        "[databases]",
        f"* = host={server.host or '127.0.0.1'} port={server.port or 5432}",
        "[pgbouncer]",
        "listen_addr = 127.0.0.1",
        f"listen_port = {port}",
        "unix_socket_dir =",
        "auth_type = trust",
        f"auth_file = {work / 'users.txt'}",
        f"pool_mode = {mode}",
        f"default_pool_size = {pool_size}",
        "max_client_conn = 2000",
        # A client waiting longer than this for a server connection gets an error, so a leak
        # or a deadlock in the pool shows as a failure, not as a hung test.
        "query_wait_timeout = 30",
    ]
    if os.geteuid() == 0:
        # PgBouncer refuses to run as root; it switches to this user after reading its files.
        lines.append(f"user = {_unprivileged_user()}")
        work.chmod(0o755)
    config = work / "pgbouncer.ini"
    config.write_text("\n".join(lines) + "\n")
    log = work / "pgbouncer.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [program, str(config)], stdout=sink, stderr=subprocess.STDOUT, cwd=work
        )
    try:
        _wait_listening(port, process, log, timeout=10)
        yield PgBouncer(port, log)
    finally:
        _stop(process)
        shutil.rmtree(work, ignore_errors=True)


def _unprivileged_user() -> str:
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        return name
    raise RuntimeError("no unprivileged user for pgbouncer to run as")


@dataclass
class HAProxy:
    url: str
    port: int
    log: Path
    work: Path


@contextmanager
def haproxy(backends: Sequence[tuple[str, int]]) -> Iterator[HAProxy]:
    """HAProxy on a free loopback port, round-robin over `backends` (name, port), each checked
    on `/readyz` every 200 ms (down after 2 failures, up after 1 success). The answering
    replica's name comes back in `X-Replica`; a request whose connection is refused is sent to
    another replica (`option redispatch`), one already sent is not (it may have been served).
    """
    program = find("haproxy")
    if program is None:
        raise FileNotFoundError("haproxy is not installed (apt-get install haproxy)")
    work = Path(tempfile.mkdtemp(prefix="identity-haproxy-"))
    port = free_port()
    servers = [
        f"    server {name} 127.0.0.1:{backend} check inter 200ms fall 2 rise 1"
        for name, backend in backends
    ]
    config = work / "haproxy.cfg"
    config.write_text(
        "\n".join(
            [
                "global",
                "    maxconn 4000",
                f"    stats socket {work / 'admin.sock'} level admin",
                "defaults",
                "    mode http",
                "    timeout connect 2s",
                "    timeout client 60s",
                "    timeout server 60s",
                "    retries 2",
                "    option redispatch",
                "    option forwardfor",
                "frontend balancer",
                f"    bind 127.0.0.1:{port}",
                "    default_backend replicas",
                "backend replicas",
                "    balance roundrobin",
                "    option httpchk GET /readyz",
                "    http-check expect status 200",
                "    http-response set-header X-Replica %[srv_name]",
                *servers,
                "",
            ]
        )
    )
    log = work / "haproxy.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [program, "-db", "-f", str(config)], stdout=sink, stderr=subprocess.STDOUT, cwd=work
        )
    try:
        _wait_listening(port, process, log, timeout=10)
        yield HAProxy(f"http://127.0.0.1:{port}", port, log, work)
    finally:
        _stop(process)
        shutil.rmtree(work, ignore_errors=True)


def haproxy_command(proxy: HAProxy, command: str) -> str:
    """One command of HAProxy's runtime API (e.g. `show servers state`), its answer."""
    with socket.socket(socket.AF_UNIX) as admin:
        admin.connect(str(proxy.work / "admin.sock"))
        admin.sendall(command.encode() + b"\n")
        chunks = []
        while chunk := admin.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode()
