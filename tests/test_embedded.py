"""Ports for servers started by the project and its tests (adfunnel.embedded)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from adfunnel import embedded
from adfunnel.errors import EmbeddedServerError


def test_a_free_port_binds_and_stays_below_the_kernels_ephemeral_range() -> None:
    low = embedded._ephemeral_low()
    if not low:
        pytest.skip("this kernel does not say which ports it hands out")
    ports = {embedded.free_port() for _ in range(50)}
    assert all(embedded._QUIET_PORTS_FROM <= port < low for port in ports), sorted(ports)
    assert len(ports) > 1  # picked at random, so concurrent callers rarely collide
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", ports.pop()))


def test_a_port_someone_listens_on_is_never_handed_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        # A quiet range of one port, and that one taken.
        fake = tmp_path / "ip_local_port_range"
        fake.write_text(f"{port + 1}\t{port + 100}\n")
        monkeypatch.setattr(embedded, "_QUIET_PORTS_FROM", port)
        monkeypatch.setattr(embedded, "_EPHEMERAL_RANGE", fake)
        with pytest.raises(EmbeddedServerError, match="no free TCP port"):
            embedded.free_port()


def test_without_a_known_range_the_kernel_picks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(embedded, "_EPHEMERAL_RANGE", tmp_path / "missing")
    assert 0 < embedded.free_port() < 65_536
