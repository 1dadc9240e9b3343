"""Keeps this instance's one Redis Pub/Sub connection subscribed to what the router wants.

It connects (and reconnects with backoff), subscribes to every channel the
router wants, knows which SUBSCRIBEs Redis has confirmed (a socket's replay
may only start once its channels are confirmed), and checks the link with a
PING. Any break is reported through ``on_break`` before reconnecting and
``on_restored`` once every wanted channel is confirmed again, so the server
can repair every socket from PostgreSQL. See docs/gateway.md ("Pub/Sub").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable

from gateway.routing import Router
from whatschat.events import presence_channel
from whatschat.storage import pubsub

logger = logging.getLogger("whatschat.gateway.relay")

PRESENCE_KEY = presence_channel().encode()


class Relay:
    """The Pub/Sub connection of one gateway instance."""

    def __init__(
        self,
        url: str,
        router: Router,
        *,
        timeout: float,
        ping_seconds: float,
        on_break: Callable[[], None],
        on_restored: Callable[[], None],
    ) -> None:
        self.url = url  # redis:// URL
        self.router = router  # what to subscribe to, and where messages go
        self.timeout = timeout  # connect and PING answer deadline (seconds)
        self.ping_seconds = ping_seconds  # how often the link is checked
        self.on_break = on_break  # the stream broke: events may have been lost
        self.on_restored = on_restored  # resubscribed after a break: repair sockets
        self.conn: pubsub.PubSubConnection | None = None  # None while disconnected
        self.confirmed: set[bytes] = set()  # channels whose SUBSCRIBE Redis confirmed
        self.waiters: dict[bytes, list[asyncio.Future[None]]] = {}  # awaiting confirmation
        self.breaks = 0  # connections lost since start
        self.last_pong = 0.0  # monotonic time of the last PING answer
        self.lost = asyncio.Event()  # set when the current connection ended
        self.stopping = False  # set by stop(): do not reconnect

    # --- interest -------------------------------------------------------------

    def want(self, channels: Iterable[bytes]) -> None:
        """SUBSCRIBE to channels the router just started to want."""
        fresh = [c for c in channels if c not in self.confirmed]
        if fresh and self.conn is not None:
            self.conn.subscribe(fresh)

    def drop(self, channels: Iterable[bytes]) -> None:
        """UNSUBSCRIBE from channels nobody here wants any more."""
        gone = [c for c in channels if c != PRESENCE_KEY]
        self.confirmed.difference_update(gone)
        if gone and self.conn is not None:
            self.conn.unsubscribe(gone)

    async def wait_confirmed(self, channels: Iterable[bytes], timeout: float) -> None:
        """Return once Redis confirmed every channel; TimeoutError after ``timeout``."""
        loop = asyncio.get_running_loop()
        futures = []
        for channel in channels:
            if channel in self.confirmed:
                continue
            future: asyncio.Future[None] = loop.create_future()
            self.waiters.setdefault(channel, []).append(future)
            futures.append(future)
        if futures:
            try:
                await asyncio.wait_for(asyncio.gather(*futures), timeout)
            finally:
                for channel in list(self.waiters):
                    pending = [f for f in self.waiters[channel] if not f.done()]
                    if pending:
                        self.waiters[channel] = pending
                    else:
                        del self.waiters[channel]

    @property
    def ready(self) -> bool:
        """Connected, and every wanted channel confirmed (/readyz)."""
        if self.conn is None or PRESENCE_KEY not in self.confirmed:
            return False
        return all(channel in self.confirmed for channel in self.router.routes)

    # --- callbacks from the connection ----------------------------------------

    def _on_message(self, channel: bytes, payload: bytes) -> None:
        if channel == PRESENCE_KEY:
            self.router.dispatch_presence(payload)
        else:
            self.router.dispatch(channel, payload)

    def _on_subscribed(self, channel: bytes) -> None:
        if channel != PRESENCE_KEY and channel not in self.router.routes:
            return  # left again before the confirmation came
        self.confirmed.add(channel)
        for future in self.waiters.pop(channel, []):
            if not future.done():
                future.set_result(None)

    def _on_lost(self, exc: BaseException | None) -> None:
        self.lost.set()

    def _on_pong(self) -> None:
        self.last_pong = time.monotonic()

    # --- the connection loop --------------------------------------------------

    async def run(self) -> None:
        """Connect, subscribe, watch; on any break report it and start over."""
        delay = 0.1
        first = True
        while not self.stopping:
            self.lost = asyncio.Event()
            try:
                conn = await pubsub.connect(
                    self.url,
                    self.timeout,
                    self._on_message,
                    self._on_subscribed,
                    self._on_lost,
                    self._on_pong,
                )
            except (OSError, TimeoutError, ConnectionError, ValueError) as exc:
                logger.warning("Redis Pub/Sub unreachable (%s); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            self.conn = conn
            conn.subscribe([PRESENCE_KEY, *self.router.wanted()])
            try:
                await self.wait_confirmed([PRESENCE_KEY, *self.router.wanted()], self.timeout * 5)
            except TimeoutError:
                logger.warning("Redis did not confirm the subscriptions; reconnecting")
                conn.close()
            if not self.lost.is_set():
                delay = 0.1
                if first:
                    logger.info("Pub/Sub connected")
                else:
                    logger.warning("Pub/Sub reconnected; repairing every socket from PostgreSQL")
                    self.on_restored()
                first = False
                await self._watch(conn)
            self.conn = None
            self.confirmed.clear()
            if self.stopping:
                break
            self.breaks += 1
            logger.warning("Pub/Sub connection lost; events may be missing until repaired")
            self.on_break()
            first = False

    async def _watch(self, conn: pubsub.PubSubConnection) -> None:
        """PING every ``ping_seconds``; a missing answer ends the connection."""
        self.last_pong = time.monotonic()
        while not self.lost.is_set():
            sent = time.monotonic()
            conn.ping()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.lost.wait(), self.ping_seconds)
            if self.lost.is_set():
                return
            if self.last_pong < sent:
                logger.warning("Redis did not answer PING in %.1fs", self.ping_seconds)
                conn.close()
                await self.lost.wait()
                return

    def stop(self) -> None:
        self.stopping = True
        if self.conn is not None:
            self.conn.close()
