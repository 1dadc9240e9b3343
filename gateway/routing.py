"""Which local sockets want which Redis channel, and the hot path that feeds them.

:class:`Router` keeps, per channel, the set of local sessions interested in
it. A channel is subscribed while that set is non-empty: the set size is the
reference count across sockets, devices and users of this instance, so two
members of a group on one instance cost one Redis subscription. No I/O here:
:meth:`Router.attach` and :meth:`Router.detach` say when the shell must
SUBSCRIBE or UNSUBSCRIBE, and :meth:`Router.dispatch` is called with each
published message. See docs/gateway.md ("Subscriptions").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import orjson

from gateway.protocol import presence_frame, text_frame
from gateway.session import Session, membership_change
from whatschat.events import ENVELOPE_VERSION, conversation_channel, user_channel

CONVERSATION = 1
USER = 2


@dataclass(eq=False, slots=True)
class Route:
    """A channel and the local sessions reading it."""

    kind: int  # CONVERSATION or USER
    id: int  # the conversation or user id the channel is for
    sessions: set[Session] = field(default_factory=set)  # interested local sessions


@dataclass
class RouterStats:
    """Counters read by /metrics (plain ints: the hot path must not take locks)."""

    events: int = 0  # envelopes read from Redis and routed
    dropped: int = 0  # unreadable envelopes, or versions this gateway does not know
    presence: int = 0  # presence changes routed


class Router:
    """Channels -> interested sessions, and the dispatch of published messages."""

    def __init__(
        self,
        on_membership: Callable[[Session, str, int], None],
        on_routed: Callable[[int, int], None] | None = None,
    ) -> None:
        self.routes: dict[bytes, Route] = {}  # channel name (bytes) -> its route
        self.on_membership = on_membership  # (session, "joined"|"left", conversation_id)
        self.on_routed = on_routed  # (envelope ts in ms, recipients) once per event
        self.stats = RouterStats()  # read by the metrics collector

    # --- interest -------------------------------------------------------------

    @staticmethod
    def conversation_key(conversation_id: int) -> bytes:
        return conversation_channel(conversation_id).encode()

    @staticmethod
    def user_key(user_id: int) -> bytes:
        return user_channel(user_id).encode()

    def attach(self, session: Session, channel: bytes, kind: int, ident: int) -> bool:
        """Add a session's interest; True when the channel needs a SUBSCRIBE."""
        route = self.routes.get(channel)
        if route is None:
            route = self.routes[channel] = Route(kind, ident)
        first = not route.sessions
        route.sessions.add(session)
        return first

    def detach(self, session: Session, channel: bytes) -> bool:
        """Drop a session's interest; True when nobody here wants the channel any more."""
        route = self.routes.get(channel)
        if route is None or session not in route.sessions:
            return False
        route.sessions.discard(session)
        if not route.sessions:
            del self.routes[channel]
            return True
        return False

    def channels_of(self, session: Session) -> list[bytes]:
        """Every channel a session is attached to (for detaching it on close)."""
        keys = [self.user_key(session.user_id)]
        keys.extend(self.conversation_key(cid) for cid in session.cursors)
        return [key for key in keys if session in self.routes.get(key, Route(0, 0)).sessions]

    def wanted(self) -> list[bytes]:
        """Every channel some local session wants (resubscribed after a reconnect)."""
        return list(self.routes)

    # --- the hot path ---------------------------------------------------------

    def dispatch(self, channel: bytes, payload: bytes) -> None:
        """Route one published envelope to the local sessions that want its channel.

        The frame is built once and the same bytes go to every recipient.
        """
        route = self.routes.get(channel)
        if route is None:
            return  # a message still in flight for a channel we just left
        try:
            doc = orjson.loads(payload)
            if doc["v"] != ENVELOPE_VERSION:
                raise ValueError("unknown envelope version")
            seq = doc["seq"]
            ts = doc["ts"]
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            self.stats.dropped += 1
            return
        if seq is not None and (type(seq) is not int or seq < 1):
            self.stats.dropped += 1
            return
        self.stats.events += 1
        frame = text_frame(payload)
        sessions = route.sessions
        if route.kind == CONVERSATION:
            cid = route.id
            for session in sessions:
                session.deliver(cid, seq, frame)
        else:
            change = membership_change(doc)
            # A copy: a membership change may detach sessions while we iterate.
            for session in list(sessions):
                session.write_personal(frame)
                if change is not None:
                    self.on_membership(session, change[0], change[1])
        if self.on_routed is not None and type(ts) is int:
            self.on_routed(ts, len(sessions))

    def dispatch_presence(self, payload: bytes) -> None:
        """A presence change: to local sessions sharing a direct conversation with the user."""
        try:
            doc = orjson.loads(payload)
            user_id = int(doc["user_id"])
            online = bool(doc["online"])
            last_seen = doc.get("last_seen")
            conversations = [int(cid) for cid in doc["conversations"]]
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            self.stats.dropped += 1
            return
        self.stats.presence += 1
        frame: bytes | None = None
        sent: set[Session] = set()
        for cid in conversations:
            route = self.routes.get(self.conversation_key(cid))
            if route is None:
                continue
            for session in route.sessions:
                if session.user_id == user_id or session in sent or session.closed:
                    continue
                if frame is None:
                    ls = last_seen if isinstance(last_seen, int) else None
                    frame = text_frame(presence_frame(user_id, online, ls))
                sent.add(session)
                session.write(frame)
