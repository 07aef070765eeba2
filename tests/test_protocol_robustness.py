"""The node's Unix socket: private (0600), and a bad frame closes only that connection."""

from __future__ import annotations

import os
import socket
import stat
import struct
from typing import Any

import pytest

import peer as ray

pytestmark = pytest.mark.usefixtures("cluster")


@ray.remote
def double(x: int) -> int:
    return 2 * x


def _closed_by_peer(sock: socket.socket) -> bool:
    sock.settimeout(10)
    try:
        while True:
            data = sock.recv(65536)
            if data == b"":
                return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def _connect(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    return sock


def test_socket_is_private(cluster: dict[str, Any]) -> None:
    mode = stat.S_IMODE(os.stat(cluster["socket"]).st_mode)
    assert mode == 0o600, oct(mode)


def test_oversized_frame_closes_connection(cluster: dict[str, Any]) -> None:
    with _connect(cluster["socket"]) as sock:
        sock.sendall(struct.pack("<I", 0xFFFFFFFF) + b"\x00" * 64)
        assert _closed_by_peer(sock), "the node must close a connection that announces a 4 GiB frame"
    assert ray.get([double.remote(i) for i in range(10)]) == [2 * i for i in range(10)]


def test_garbage_frame_closes_connection(cluster: dict[str, Any]) -> None:
    garbage = b"\xff" * 32
    with _connect(cluster["socket"]) as sock:
        sock.sendall(struct.pack("<I", len(garbage)) + garbage)
        assert _closed_by_peer(sock), "the node must close a connection that sends undecodable bytes"
    assert ray.get(double.remote(21)) == 42


def test_many_bad_connections_do_not_hurt(cluster: dict[str, Any]) -> None:
    for i in range(20):
        with _connect(cluster["socket"]) as sock:
            if i % 2:
                sock.sendall(struct.pack("<I", 0xFFFFFFFF))
            else:
                sock.sendall(b"\x05\x00")  # a truncated length prefix, then hang up
    assert ray.get([double.remote(i) for i in range(10)]) == [2 * i for i in range(10)]
