"""The gateway's asyncio shell: WebSocket on GATEWAY_PORT, health on GATEWAY_HTTP_PORT.

A first minimal version so the local stack starts; see docs/gateway.md.
"""

from __future__ import annotations

import asyncio
import logging
import signal

from websockets.asyncio.server import ServerConnection, serve
from websockets.http11 import Request, Response

from whatschat.config import get_settings

logger = logging.getLogger("whatschat.gateway")

SOCKET_PATH = "/v1/socket"


async def _handler(ws: ServerConnection) -> None:
    async for _ in ws:
        pass


def _only_socket_path(ws: ServerConnection, request: Request) -> Response | None:
    if request.path.split("?", 1)[0] != SOCKET_PATH:
        return ws.respond(404, "not found\n")
    return None


async def _http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        line = await asyncio.wait_for(reader.readline(), 5)
        parts = line.decode("latin-1").split()
        path = parts[1] if len(parts) > 1 else ""
        status, body = ("200 OK", b"ok\n") if path == "/healthz" else ("404 Not Found", b"")
        head = f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        writer.write(head.encode() + body)
        await writer.drain()
    except (TimeoutError, OSError):
        pass
    finally:
        writer.close()


async def serve_forever() -> None:
    settings = get_settings()
    stop = asyncio.get_running_loop().create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set_result, None)
    http = await asyncio.start_server(_http, settings.gateway_host, settings.gateway_http_port)
    async with serve(
        _handler,
        settings.gateway_host,
        settings.gateway_port,
        process_request=_only_socket_path,
    ) as server:
        logger.info("gateway listening on %s:%s", settings.gateway_host, settings.gateway_port)
        await stop
        server.close(close_connections=True)
    http.close()


def main() -> int:
    """Run the gateway until SIGTERM or SIGINT; return the exit code."""
    asyncio.run(serve_forever())
    return 0
