"""How `reloop serve` listens: the socket it binds before uvicorn starts."""

from __future__ import annotations

import asyncio
import socket

from reloop_cli.serving.protocol import open_socket


def test_connections_on_the_served_socket_send_without_waiting_for_acks():
    """asyncio turns Nagle off (TCP_NODELAY) only on connections whose socket says it is TCP.
    With a socket opened as protocol 0, every answer on a kept-alive connection waited for the
    client's delayed ACK: /score took 48 ms at p50 on loopback instead of 3."""
    listening = open_socket("127.0.0.1", 0)
    assert listening.proto == socket.IPPROTO_TCP
    seen: list[int] = []

    async def serve_one() -> None:
        def connected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            sock = writer.get_extra_info("socket")
            seen.append(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()

        server = await asyncio.start_server(connected, sock=listening)
        port = listening.getsockname()[1]
        async with server:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            for _ in range(100):
                if seen:
                    break
                await asyncio.sleep(0.01)
            writer.close()

    asyncio.run(serve_one())
    assert seen and seen[0] != 0
