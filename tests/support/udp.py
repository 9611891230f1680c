"""Sending many DNS questions over UDP at once and collecting every answer by its ID."""

from __future__ import annotations

import asyncio
import socket


async def exchange(port: int, packets: list[bytes], family: int = socket.AF_INET) -> dict[int, bytes]:
    """Send every packet at once; every answer by ID."""
    host = "127.0.0.1" if family == socket.AF_INET else "::1"
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        sock.setblocking(False)
        for packet in packets:
            sock.sendto(packet, (host, port))
        loop = asyncio.get_running_loop()
        got: dict[int, bytes] = {}
        while len(got) < len(packets):
            data = await asyncio.wait_for(loop.sock_recv(sock, 65536), 5)
            got[int.from_bytes(data[:2], "big")] = data
    return got
