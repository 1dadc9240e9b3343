"""The gateway's asyncio shell: sockets, the Pub/Sub relay, replays, presence, HTTP.

The decisions live in the sans-I/O core (gateway/protocol.py, session.py,
routing.py); this module moves bytes. A socket's life:

1. Handshake on GATEWAY_PORT path /v1/socket (gateway/connection.py: the
   websockets library's sans-I/O protocol on an asyncio transport); the
   first frame must be a ``hello`` with the access token within
   GATEWAY_AUTH_TIMEOUT_SECONDS.
2. Start (:meth:`Gateway._sync`): subscribe to the user's channel, read the
   memberships, subscribe to each conversation channel and wait for Redis to
   confirm, THEN read from PostgreSQL what the client missed. Live events
   that arrive meanwhile are held by the session and written after the
   replay, minus the seqs the replay covered. Then ``ready``.
3. Live: the router queues each published event's frame (built once) on
   every interested socket; each socket's queue is written in one call at
   the end of the loop iteration. A socket whose send buffer passes
   GATEWAY_SEND_BUFFER_BYTES is cut off (4008) and resumes, so memory stays
   bounded and nothing is lost.
4. Any break of the Pub/Sub connection holds every socket's conversations
   and, once resubscribed, repairs each socket from PostgreSQL starting at
   what it was last sent.

HTTP on GATEWAY_HTTP_PORT: /healthz, /readyz, /metrics. SIGTERM drains:
stop accepting, close every socket with 1012 within GATEWAY_DRAIN_SECONDS,
exit 0. See docs/gateway.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import orjson
from websockets.http11 import Request, Response
from websockets.protocol import State

from gateway import protocol
from gateway.connection import Connection
from gateway.metrics import Metrics, ServerStats
from gateway.protocol import CloseCode, ProtocolError
from gateway.relay import Relay
from gateway.routing import CONVERSATION, USER, Router
from gateway.session import Session
from whatschat.config import Settings, get_settings
from whatschat.events import Event
from whatschat.schemas import message_view
from whatschat.storage import database, replay
from whatschat.storage.presence import PresenceStore, RedisError
from whatschat.tokens import LEEWAY_SECONDS, InvalidToken, verify_access_token

logger = logging.getLogger("whatschat.gateway")

SOCKET_PATH = "/v1/socket"
OPEN = State.OPEN


class Unavailable(Exception):
    """Redis or PostgreSQL did not answer while starting or repairing a session."""


def message_frame(row: dict[str, Any]) -> tuple[int, bytes]:
    """A stored message as the frame of its ``message.created`` event (replays)."""
    view = message_view(row)
    created: datetime = row["created_at"]
    event = Event(
        "message.created",
        {"message": view.model_dump(mode="json")},
        conversation_id=view.conversation_id,
        seq=view.seq,
        ts=int(created.timestamp() * 1000),
    )
    return view.seq, protocol.text_frame(event.encode())


class Gateway:
    """One gateway instance: every socket, the router, the relay, presence."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings  # read once at start
        # In a pod the host name is the pod's name: presence keys say who holds a user.
        self.instance_id = settings.gateway_instance_id or f"{socket.gethostname()}-{os.getpid()}"
        self.send_buffer_limit = settings.gateway_send_buffer_bytes  # per socket, bytes
        self.stats = ServerStats()  # hot-path counters for /metrics
        self.router = Router(self._on_membership)  # channels -> sessions
        self.metrics = Metrics(self._read_stats)
        self.router.on_routed = self.metrics.routed
        self.relay = Relay(
            settings.redis_url,
            self.router,
            timeout=max(settings.redis_timeout_seconds, 1.0),
            ping_seconds=settings.gateway_pubsub_ping_seconds,
            on_break=self._on_break,
            on_restored=self._on_restored,
        )
        self.presence = PresenceStore(
            settings.redis_url,
            self.instance_id,
            settings.gateway_presence_ttl_seconds,
            max(settings.redis_timeout_seconds, 1.0),
        )
        self.by_user: dict[int, set[Connection]] = {}  # user_id -> their authenticated sockets here
        self.authenticated = 0  # authenticated sockets (gauge)
        self.db_slots = asyncio.Semaphore(settings.gateway_resync_concurrency)  # replays at once
        self.gap_timers: dict[int, asyncio.TimerHandle] = {}  # conversation -> pending fill
        self.typing_sent: dict[tuple[int, int], float] = {}  # (user, conversation) -> time
        self.presence_updates: dict[int, asyncio.Task[Any]] = {}  # user -> last update queued
        self.tasks: set[asyncio.Task[Any]] = set()  # background tasks kept alive
        self.draining = False  # SIGTERM received: refuse new sockets
        self.server: asyncio.Server | None = None  # the WebSocket listener
        self.http: asyncio.Server | None = None  # health and metrics
        self.loop = asyncio.get_running_loop()  # the loop this instance runs on
        self.dirty: list[Connection] = []  # sockets with frames queued for the next flush
        self.flush_scheduled = False  # a flush is due at the end of this iteration
        self.relay_task: asyncio.Task[Any] | None = None  # the Pub/Sub connection loop
        self.heartbeat_task: asyncio.Task[Any] | None = None  # presence refresh and reaping
        self.keepalive_task: asyncio.Task[Any] | None = None  # pings idle sockets
        self.connections: set[Connection] = set()  # every open TCP connection
        self.close_timeout = 2.0  # seconds a closing handshake may take before an abort
        self.logger = logger  # for the connections' error reports

    # --- writes: coalesced per loop iteration ------------------------------------

    def mark_dirty(self, conn: Connection) -> None:
        """A conn has frames queued: flush every such conn once the current callback
        (typically one read of many Redis messages) is done. Under load a socket
        then gets one write of many frames instead of one system call per frame."""
        self.dirty.append(conn)
        if not self.flush_scheduled:
            self.flush_scheduled = True
            self.loop.call_soon(self.flush)

    def flush(self) -> None:
        """Write every queued frame; cut off sockets whose send buffer is full."""
        self.flush_scheduled = False
        dirty, self.dirty = self.dirty, []
        limit = self.send_buffer_limit
        written = 0
        for conn in dirty:
            frames = conn.pending_frames
            conn.pending_frames = None
            transport = conn.transport
            if frames is None or transport is None or conn.protocol.state is not OPEN:
                continue
            if transport.get_write_buffer_size() > limit:
                self.stats.slow_consumers += 1
                conn.close(CloseCode.SLOW_CONSUMER, "slow consumer: reconnect and resume")
                continue
            if len(frames) == 1:
                transport.write(frames[0])
            else:
                transport.writelines(frames)
            written += len(frames)
        self.stats.deliveries += written

    # --- plumbing -------------------------------------------------------------

    def spawn(self, awaitable: Awaitable[Any]) -> asyncio.Task[Any]:
        async def run() -> Any:
            return await awaitable

        task = asyncio.get_running_loop().create_task(run())
        self.tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            logger.error("background task failed", exc_info=exc)

    def _read_stats(self) -> tuple[ServerStats, Any, int, int]:
        return self.stats, self.router.stats, self.authenticated, self.relay.breaks

    async def _db(self, call: Callable[..., Any], *args: Any) -> Any:
        """Run a blocking storage call in a thread, a bounded number at once."""
        async with self.db_slots:
            try:
                return await asyncio.to_thread(call, *args)
            except database.DatabaseUnavailable as exc:
                raise Unavailable(str(exc)) from exc

    # --- sockets --------------------------------------------------------------

    def handshake(self, conn: Connection, request: Request) -> Response:
        """The HTTP answer to a connection's opening handshake."""
        if request.path.split("?", 1)[0] != SOCKET_PATH:
            return conn.protocol.reject(404, "Not Found\n")
        if self.draining:
            return conn.protocol.reject(503, "Draining: connect to another instance\n")
        response = conn.protocol.accept(request)
        # The library's parser keeps the request for the socket's life; its
        # headers are not needed after the handshake (about 1 KiB a socket).
        request.headers.clear()
        return response

    def received(self, conn: Connection, message: str | bytes) -> None:
        """A complete client message (text as str; binary, or invalid text, as bytes)."""
        if conn.session is None:
            self._hello(conn, message)
            return
        now = self.loop.time()
        if now - conn.frames_window >= 1.0:
            conn.frames_window, conn.frames_in_window = now, 0
        conn.frames_in_window += 1
        if conn.frames_in_window > protocol.CLIENT_FRAMES_PER_SECOND:
            self.stats.protocol_errors += 1
            if conn.frames_in_window == protocol.CLIENT_FRAMES_PER_SECOND + 1:
                conn.send(protocol.error_frame("rate_limited", "too many frames: slow down"))
            return
        self._on_frame(conn, message)

    def _hello(self, conn: Connection, message: str | bytes) -> None:
        s = self.settings
        try:
            hello = protocol.parse_client_frame(message)
        except ProtocolError as exc:
            self.stats.auth_failures += 1
            conn.close(CloseCode.HELLO_REQUIRED, f"first frame must be hello: {exc.code}")
            return
        if not isinstance(hello, protocol.Hello):
            self.stats.auth_failures += 1
            conn.close(CloseCode.HELLO_REQUIRED, "first frame must be hello")
            return
        try:
            claims = verify_access_token(hello.token)
        except InvalidToken:
            self.stats.auth_failures += 1
            conn.close(CloseCode.AUTH_FAILED, "invalid or expired token")
            return
        mine = self.by_user.get(claims.user_id)
        if mine is not None and len(mine) >= s.gateway_max_connections_per_user:
            conn.close(CloseCode.TOO_MANY_CONNECTIONS, "too many connections for this user")
            return
        if conn.deadline is not None:
            conn.deadline.cancel()
            conn.deadline = None
        if mine is None:
            mine = self.by_user[claims.user_id] = set()
        session = Session(
            uuid.uuid4().hex[:16],
            claims.user_id,
            conn.write,
            held_max=s.gateway_held_events_max,
            on_gap=self._on_gap,
            on_overflow=lambda _s: self._on_overflow(conn),
        )
        conn.session = session
        mine.add(conn)
        self.authenticated += 1
        self._set_expiry(conn, claims.expires_at)
        if hello.positions is not None:
            self.stats.resumes += 1
        conn.worker = self.loop.create_task(self._start(conn, hello.positions, len(mine) == 1))

    async def _start(
        self, conn: Connection, positions: dict[int, int] | None, first_here: bool
    ) -> None:
        """Subscribe, replay, ``ready``; then the socket is live."""
        session = conn.session
        assert session is not None
        try:
            await self._sync(conn, positions, None, initial=True)
        except (Unavailable, TimeoutError) as exc:
            logger.warning("session start failed: %s", exc)
            conn.close(CloseCode.TRY_AGAIN_LATER, "storage unavailable, retry")
            return
        if session.closed:
            return
        if first_here:
            self._presence_update(session.user_id, self._went_online(session))
        conn.live = True
        conn.worker = None
        self._kick(conn)

    def disconnected(self, conn: Connection) -> None:
        """An authenticated socket is gone: drop its interest and, maybe, its presence."""
        session = conn.session
        assert session is not None
        session.closed = True
        if conn.worker is not None:
            conn.worker.cancel()
        mine = self.by_user.get(session.user_id, set())
        mine.discard(conn)
        self.authenticated -= 1
        if not mine:
            self.by_user.pop(session.user_id, None)
            self._presence_update(session.user_id, self._went_offline(session.user_id))
        gone = [key for key in self.router.channels_of(session) if self.router.detach(session, key)]
        self.relay.drop(gone)

    def _set_expiry(self, conn: Connection, expires_at: int) -> None:
        if conn.expiry_timer is not None:
            conn.expiry_timer.cancel()
        conn.claims_expire = expires_at
        # The same leeway the verifier grants for clock differences.
        delay = max(0.0, expires_at + LEEWAY_SECONDS - time.time())
        conn.expiry_timer = self.loop.call_later(
            delay, conn.close, CloseCode.TOKEN_EXPIRED, "token expired: reconnect with a new one"
        )

    def _on_frame(self, conn: Connection, message: str | bytes) -> None:
        session = conn.session
        assert session is not None
        try:
            frame = protocol.parse_client_frame(message)
        except ProtocolError as exc:
            self.stats.protocol_errors += 1
            conn.send(protocol.error_frame(exc.code, exc.detail))
            return
        if isinstance(frame, protocol.Ping):
            conn.send(protocol.pong_frame(frame.id))
        elif isinstance(frame, protocol.Auth):
            try:
                claims = verify_access_token(frame.token)
            except InvalidToken:
                self.stats.auth_failures += 1
                conn.close(CloseCode.AUTH_FAILED, "invalid token")
                return
            if claims.user_id != session.user_id:
                self.stats.auth_failures += 1
                conn.close(CloseCode.AUTH_FAILED, "token of another user")
                return
            self._set_expiry(conn, claims.expires_at)
            conn.send(protocol.authed_frame(claims.expires_at))
        elif isinstance(frame, protocol.Typing):
            self._typing(conn, frame)
        elif isinstance(frame, protocol.PresenceQuery):
            self.spawn(self._presence_query(conn))
        else:
            self.stats.protocol_errors += 1
            conn.send(protocol.error_frame("unexpected_hello", "already authenticated"))

    # --- sync: subscribe first, then replay -------------------------------------

    async def _sync(
        self,
        conn: Connection,
        positions: dict[int, int] | None,
        only: set[int] | None,
        *,
        initial: bool = False,
        reason: str = "",
    ) -> None:
        """Bring some (``only``) or all conversations of a socket up to date.

        ``positions``: the client's own positions (initial resume), or None for
        a fresh start (initial) / the session's delivered seqs (later syncs).
        """
        session = conn.session
        assert session is not None
        s = self.settings
        wait = max(s.redis_timeout_seconds, 1.0) * 5
        uid = session.user_id
        if initial:
            key = self.router.user_key(uid)
            if self.router.attach(session, key, USER, uid):
                self.relay.want([key])
            await self.relay.wait_confirmed([key], wait)
        if only is None:
            found = await self._db(replay.memberships, uid)
            targets = {m.conversation_id for m in found if m.left_seq is None}
            targets |= set(session.cursors)
        else:
            targets = set(only)
        given = dict(positions or {})
        processed: set[int] = set()
        seen: dict[int, replay.Membership] = {}
        for _ in range(3):  # memberships may change while we subscribe: catch up a few times
            fresh: list[bytes] = []
            for cid in sorted(targets):
                session.hold(cid, given.get(cid, 0), 0)
                key = self.router.conversation_key(cid)
                if self.router.attach(session, key, CONVERSATION, cid):
                    fresh.append(key)
            self.relay.want(fresh)
            await self.relay.wait_confirmed(
                [self.router.conversation_key(cid) for cid in targets], wait
            )
            scope = (targets | set(given)) - processed
            # Positions to replay from: the client's, else what the session
            # was sent, else (a conversation new to it) its join. A fresh
            # client (no positions at all) gets no replay.
            replay_from: dict[int, int] = {}
            for cid in scope:
                cursor = session.cursors.get(cid)
                if cid in given:
                    replay_from[cid] = given[cid]
                elif cursor is not None and (not initial or positions is not None):
                    replay_from[cid] = cursor.delivered
            plans, found = await self._db(self._read_replay, uid, sorted(scope), replay_from)
            self._apply(conn, scope, plans, found)
            processed |= scope
            seen.update((m.conversation_id, m) for m in found)
            if only is not None:
                break
            current = {m.conversation_id for m in found if m.left_seq is None}
            targets = current - processed  # joined while we were subscribing
            if not targets:
                break
        if initial:
            conversations = {
                m.conversation_id: {
                    "last_seq": m.last_seq,
                    "read_seq": m.read_seq,
                    "role": m.role,
                    "kind": m.kind,
                }
                for m in seen.values()
                if m.left_seq is None and m.conversation_id in session.cursors
            }
            conn.send(
                protocol.ready_frame(
                    session.session_id,
                    uid,
                    conn.claims_expire,
                    conversations,
                    {
                        "max_frame_bytes": s.gateway_max_frame_bytes,
                        "replay_max_messages": s.gateway_replay_max_messages,
                        "typing_interval_seconds": s.gateway_typing_interval_seconds,
                    },
                )
            )
        elif reason:
            conn.send(protocol.resumed_frame(reason, session.positions()))

    def _read_replay(
        self, user_id: int, conversation_ids: list[int], replay_from: dict[int, int]
    ) -> tuple[dict[int, tuple[replay.Replay, list[tuple[int, bytes]]]], list[replay.Membership]]:
        """In a thread: memberships, missed messages, and their frames."""
        found = replay.memberships(user_id, left_of=conversation_ids)
        scope = set(conversation_ids)
        wanted = [m for m in found if m.conversation_id in scope]
        plans = replay.missed(wanted, replay_from, self.settings.gateway_replay_max_messages)
        framed = {
            cid: (plan, [message_frame(row) for row in plan.messages])
            for cid, plan in plans.items()
        }
        return framed, found

    def _apply(
        self,
        conn: Connection,
        targets: set[int],
        plans: dict[int, tuple[replay.Replay, list[tuple[int, bytes]]]],
        found: list[replay.Membership],
    ) -> None:
        """On the loop: write replays and held events; forget conversations left."""
        session = conn.session
        assert session is not None
        by_id = {m.conversation_id: m for m in found}
        for cid in sorted(targets):
            m = by_id.get(cid)
            if m is None:
                self._forget(session, cid)
                continue
            upper = m.last_seq if m.left_seq is None else m.left_seq
            if m.kind == "direct" and m.peer_id is not None and m.left_seq is None:
                session.direct_peers[cid] = m.peer_id
            cursor = session.cursors.get(cid)
            if cursor is None:
                if m.left_seq is None or cid not in plans:
                    continue
                session.hold(cid, plans[cid][0].after_seq, m.joined_seq)
            else:
                session.hold(cid, cursor.delivered, m.joined_seq)
            planned = plans.get(cid)
            if planned is None:
                # No position known: start live from now (a fresh client pages
                # history itself).
                session.replay(cid, [], upper, catch_up=True)
            elif planned[0].too_far:
                self.stats.catch_ups += 1
                conn.send(protocol.catch_up_frame(cid, planned[0].after_seq, upper))
                session.replay(cid, [], upper, catch_up=True)
            else:
                self.stats.replayed += len(planned[1])
                session.replay(cid, planned[1], upper)
            if m.left_seq is not None:
                conn.send(protocol.left_frame(cid, m.left_seq))
                self._forget(session, cid)

    def _forget(self, session: Session, cid: int) -> None:
        session.forget(cid)
        session.direct_peers.pop(cid, None)
        key = self.router.conversation_key(cid)
        if self.router.detach(session, key):
            self.relay.drop([key])

    # --- later syncs: membership changes, gaps, Pub/Sub breaks ---------------------

    def _on_membership(self, session: Session, change: str, conversation_id: int) -> None:
        conn = self._connection_of(session)
        if conn is None:
            return
        if conversation_id not in session.cursors or change == "left":
            if conn.pending is None:
                conn.pending = set()
            conn.pending.add(conversation_id)
            self._kick(conn)

    def _connection_of(self, session: Session) -> Connection | None:
        for conn in self.by_user.get(session.user_id, ()):
            if conn.session is session:
                return conn
        return None

    def _kick(self, conn: Connection) -> None:
        idle = conn.worker is None or conn.worker.done()
        if conn.live and (conn.pending or conn.pending_full) and idle:
            conn.worker = asyncio.get_running_loop().create_task(self._work(conn))

    async def _work(self, conn: Connection) -> None:
        """Run a conn's pending syncs one at a time (never two replays at once)."""
        session = conn.session
        assert session is not None
        failures = 0
        while (conn.pending or conn.pending_full) and not session.closed:
            full, conn.pending_full = conn.pending_full, False
            only, conn.pending = (None if full else set(conn.pending or ())), None
            try:
                await self._sync(conn, None, only, reason="stream_break" if full else "")
                failures = 0
                if full:
                    self.stats.repairs += 1
            except (Unavailable, TimeoutError) as exc:
                failures += 1
                conn.pending_full = conn.pending_full or full
                conn.pending = (conn.pending or set()) | (only or set())
                if failures >= 5:
                    conn.close(CloseCode.TRY_AGAIN_LATER, "storage unavailable, resume later")
                    return
                logger.warning("sync failed (%s); retrying", exc)
                await asyncio.sleep(0.2 * 2**failures)

    def _on_gap(self, session: Session, conversation_id: int) -> None:
        if conversation_id in self.gap_timers:
            return
        loop = asyncio.get_running_loop()
        self.gap_timers[conversation_id] = loop.call_later(
            self.settings.gateway_gap_wait_seconds, self._fill_gap, conversation_id
        )

    def _fill_gap(self, conversation_id: int) -> None:
        self.gap_timers.pop(conversation_id, None)
        route = self.router.routes.get(self.router.conversation_key(conversation_id))
        if route is None:
            return
        gaps = [(s, g) for s in route.sessions if (g := s.gap(conversation_id)) is not None]
        if not gaps:
            return  # the missing events arrived in time
        after = min(g[0] for _, g in gaps)
        before = max(g[1] for _, g in gaps)
        self.spawn(self._fill(conversation_id, after, before))

    async def _fill(self, conversation_id: int, after: int, before: int) -> None:
        try:
            rows = await self._db(replay.between, conversation_id, after, before)
        except Unavailable:
            logger.warning("gap fill of conversation %s failed; retrying", conversation_id)
            await asyncio.sleep(1)
            self._fill_gap(conversation_id)
            return
        frames = [message_frame(row) for row in rows]
        self.stats.gap_fills += 1
        route = self.router.routes.get(self.router.conversation_key(conversation_id))
        for session in list(route.sessions if route else ()):
            session.fill(conversation_id, frames)
            self.stats.replayed += len(frames)

    def _on_overflow(self, conn: Connection) -> None:
        self.stats.overflows += 1
        conn.close(CloseCode.RESUME_REQUIRED, "too far behind: reconnect and resume")

    def _on_break(self) -> None:
        # Hold every conversation of every socket: nothing is written until
        # the socket has been repaired from PostgreSQL.
        for mine in self.by_user.values():
            for conn in mine:
                session = conn.session
                if session is None:
                    continue
                for cid, cursor in session.cursors.items():
                    session.hold(cid, cursor.delivered, cursor.joined_seq)
                conn.pending_full = True

    def _on_restored(self) -> None:
        for mine in list(self.by_user.values()):
            for conn in mine:
                conn.pending_full = True
                self._kick(conn)
            # Redis may have restarted empty: say again who is online here.
            first = next(iter(mine), None)
            if first is not None and first.session is not None:
                self._presence_update(first.session.user_id, self._went_online(first.session))

    # --- presence and typing ----------------------------------------------------

    def _presence_update(self, user_id: int, update: Awaitable[None]) -> None:
        """Run a user's presence updates in order (online before offline, always)."""
        previous = self.presence_updates.get(user_id)

        async def run() -> None:
            if previous is not None:
                await asyncio.wait([previous])
            await update

        task = self.spawn(run())
        self.presence_updates[user_id] = task

        def done(finished: asyncio.Task[Any]) -> None:
            if self.presence_updates.get(user_id) is finished:
                del self.presence_updates[user_id]

        task.add_done_callback(done)

    async def _went_online(self, session: Session) -> None:
        if session.closed:
            return
        try:
            await self.presence.online(session.user_id, list(session.direct_peers))
        except RedisError as exc:
            logger.warning("presence update failed: %s", exc)

    async def _went_offline(self, user_id: int) -> None:
        try:
            await self.presence.offline(user_id)
        except RedisError as exc:
            logger.warning("presence update failed: %s", exc)

    async def _presence_query(self, conn: Connection) -> None:
        session = conn.session
        assert session is not None
        try:
            users = await self.presence.lookup(sorted(set(session.direct_peers.values())))
        except RedisError:
            conn.send(protocol.error_frame("unavailable", "presence is unavailable, retry"))
            return
        conn.send(protocol.presence_state_frame(users))

    def _typing(self, conn: Connection, frame: protocol.Typing) -> None:
        session = conn.session
        assert session is not None
        cid = frame.conversation_id
        if cid not in session.cursors:
            conn.send(protocol.error_frame("not_a_member", "no such conversation"))
            return
        now = time.monotonic()
        key = (session.user_id, cid)
        last = self.typing_sent.get(key)
        interval = self.settings.gateway_typing_interval_seconds
        if frame.typing and last is not None and now - last < interval:
            return  # rate limited: the indicator is already showing
        if frame.typing:
            self.typing_sent[key] = now
        else:
            self.typing_sent.pop(key, None)
        event = Event(
            "typing", {"user_id": session.user_id, "typing": frame.typing}, conversation_id=cid
        )
        self.spawn(self._publish(conn, event))

    async def _publish(self, conn: Connection, event: Event) -> None:
        try:
            await self.presence.publish(event.channel, event.encode())
        except RedisError:
            conn.send(protocol.error_frame("unavailable", "typing is unavailable, retry"))

    async def _heartbeat(self) -> None:
        interval = self.settings.gateway_presence_ttl_seconds / 3
        while True:
            try:
                await self.presence.heartbeat(list(self.by_user))
                await self.presence.reap()
            except RedisError as exc:
                logger.warning("presence heartbeat failed: %s", exc)
            # Forget typing rate-limit entries older than a minute.
            horizon = time.monotonic() - 60
            for key in [k for k, t in self.typing_sent.items() if t < horizon]:
                del self.typing_sent[key]
            await asyncio.sleep(interval)

    # --- HTTP: health, readiness, metrics ---------------------------------------

    async def _http(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), 5)
            parts = line.decode("latin-1").split()
            path = parts[1].split("?", 1)[0] if len(parts) > 1 else ""
            content_type = "text/plain; charset=utf-8"
            if path == "/healthz":
                status, body = 200, b"ok\n"
            elif path == "/readyz":
                problems = await self._readiness()
                status = 503 if problems else 200
                body = orjson.dumps({"ready": not problems, "problems": problems})
                content_type = "application/json"
            elif path == "/metrics":
                status, body = 200, self.metrics.render()
                content_type = "text/plain; version=0.0.4; charset=utf-8"
            else:
                status, body = 404, b"not found\n"
            reason = {200: "OK", 404: "Not Found", 503: "Service Unavailable"}[status]
            head = (
                f"HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            )
            writer.write(head.encode() + body)
            await writer.drain()
        except (TimeoutError, OSError, UnicodeDecodeError):
            pass
        finally:
            writer.close()

    async def _readiness(self) -> list[str]:
        problems = []
        if self.draining:
            problems.append("draining")
        if not self.relay.ready:
            problems.append("redis: not subscribed")
        try:
            await asyncio.wait_for(
                asyncio.to_thread(
                    database.ping,
                    self.settings.database_url,
                    self.settings.database_connect_timeout_seconds,
                ),
                self.settings.database_connect_timeout_seconds + 1,
            )
        except Exception as exc:  # any failure means "not ready", reported, never raised
            problems.append(f"postgresql: {type(exc).__name__}")
        return problems

    # --- life cycle ---------------------------------------------------------------

    async def start(self) -> None:
        s = self.settings
        self.relay_task = self.spawn(self.relay.run())
        self.heartbeat_task = self.spawn(self._heartbeat())
        self.http = await asyncio.start_server(self._http, s.gateway_host, s.gateway_http_port)
        self.keepalive_task = self.spawn(self._keepalive())
        self.server = await self.loop.create_server(
            lambda: Connection(self), s.gateway_host, s.gateway_port, backlog=4096
        )
        logger.info(
            "gateway %s listening on ws://%s:%s%s (http %s)",
            self.instance_id,
            s.gateway_host,
            s.gateway_port,
            SOCKET_PATH,
            s.gateway_http_port,
        )

    async def drain(self) -> None:
        """Stop accepting, close every socket with 1012 within the grace period."""
        self.draining = True
        if self.server is not None:
            self.server.close()  # no new connections
        conns = list(self.connections)
        grace = self.settings.gateway_drain_seconds
        # Spread the closes over part of the grace period so the clients do
        # not all reconnect to the other instances in the same instant.
        spread = min(grace / 2, 0.001 * len(conns))
        for index, conn in enumerate(conns):
            if spread and index:
                await asyncio.sleep(spread / len(conns))
            if conn.is_open:
                conn.close(CloseCode.SERVICE_RESTART, "restarting: reconnect and resume")
            else:
                conn.abort()
        deadline = self.loop.time() + max(0.1, grace - spread)
        while self.connections and self.loop.time() < deadline:
            await asyncio.sleep(0.05)
        for conn in list(self.connections):
            conn.abort()
        await self.stop()

    async def _keepalive(self) -> None:
        """Ping sockets that said nothing for a ping interval; close silent ones (1011)."""
        interval = self.settings.gateway_ping_interval_seconds
        timeout = self.settings.gateway_ping_timeout_seconds
        while True:
            await asyncio.sleep(min(interval, timeout) / 2)
            now = self.loop.time()
            for conn in list(self.connections):
                idle = now - conn.last_seen
                if idle > interval + timeout:
                    # The close frame goes out; the closing handshake's
                    # timer aborts the connection if nothing answers.
                    conn.close(CloseCode.INTERNAL_ERROR, "keepalive ping timeout")
                elif idle >= interval:
                    conn.ping()

    async def stop(self) -> None:
        self.relay.stop()
        periodic = (self.relay_task, self.heartbeat_task, self.keepalive_task)
        for task in periodic:
            if task is not None:
                task.cancel()
        # Let the closing sockets' last presence updates reach Redis.
        pending = [t for t in self.tasks if t not in periodic]
        if pending:
            await asyncio.wait(pending, timeout=1.0)
        if self.server is not None:
            self.server.close()
        if self.http is not None:
            self.http.close()
        with contextlib.suppress(RedisError, OSError):
            for user_id in list(self.by_user):
                await self.presence.offline(user_id)
            await self.presence.leave()
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.presence.close()


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


async def serve_forever() -> None:
    """Run one gateway until SIGTERM or SIGINT, then drain."""
    gateway = Gateway(get_settings())
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, _resolve, stop)
    await gateway.start()
    await stop
    logger.info("draining")
    await gateway.drain()
    logger.info("stopped")


def main() -> int:
    """Run the gateway until SIGTERM or SIGINT; return the exit code."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is not built for every platform
        asyncio.run(serve_forever())
    else:
        uvloop.run(serve_forever())
    return 0
