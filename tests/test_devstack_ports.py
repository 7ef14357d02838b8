from __future__ import annotations

import socket

from ledgerly.devstack import _free_port


def _port_left_in_time_wait() -> int:
    """A port whose last connection was closed by the listening side (so it sits in TIME_WAIT),
    listened on with SO_REUSEADDR as redis-server does."""
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = int(server.getsockname()[1])
    client = socket.create_connection(("127.0.0.1", port))
    conn, _ = server.accept()
    conn.close()  # the server side closes first: its end goes to TIME_WAIT
    server.close()
    client.close()
    return port


def test_a_restart_gets_its_preferred_port_back_despite_time_wait():
    port = _port_left_in_time_wait()
    assert _free_port(port) == port


def test_a_preferred_port_in_use_is_replaced_by_a_free_one():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = int(busy.getsockname()[1])
        assert _free_port(port) != port
