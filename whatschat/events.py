"""The event envelope and the Redis channel names: the only contract between
the functions that publish and the gateway that relays.

Every event is one JSON object (UTF-8, encoded with orjson)::

    {"v": 1, "id": "<uuid hex>", "type": "message.created", "ts": 1733300000123,
     "conversation_id": 42, "seq": 17, "user_id": null, "data": {...}}

- ``v`` is the envelope version; a reader drops versions it does not know.
- ``conversation_id``/``seq`` are set on conversation events. ``seq`` is the
  per-conversation sequence of the message the event created (system messages
  record membership changes), so a client that saw ``seq`` N and missed
  events asks for everything after N. Events that create no message
  (edits, deletions, read positions) carry ``seq: null`` and the ``seq`` of
  the message they touch inside ``data``.
- ``user_id`` is set on personal events published on a user channel.

Channel names are built only here. See docs/events.md and docs/asyncapi.yaml.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import orjson

ENVELOPE_VERSION = 1

CHANNEL_PREFIX = "wc:"

# Every event type a publisher may send; the gateway relays only these.
EVENT_TYPES = frozenset(
    {
        "message.created",
        "message.edited",
        "message.deleted",
        "read.updated",
        "conversation.created",
        "group.created",
        "group.updated",
        "member.added",
        "member.removed",
        "member.role_changed",
        # Published by the gateway itself: ephemeral, never stored, seq null.
        "typing",
    }
)


def conversation_channel(conversation_id: int) -> str:
    """Events every member of the conversation sees (one PUBLISH, any group size)."""
    return f"{CHANNEL_PREFIX}c:{conversation_id}"


def user_channel(user_id: int) -> str:
    """Personal events for one user on all their devices (e.g. you were added to a group)."""
    return f"{CHANNEL_PREFIX}u:{user_id}"


def presence_channel() -> str:
    """Presence changes between gateway instances (not an envelope; see docs/gateway.md)."""
    return f"{CHANNEL_PREFIX}presence"


class InvalidEvent(ValueError):
    """Bytes that are not an envelope this version understands."""


@dataclass(frozen=True)
class Event:
    """One event as publishers build it and the gateway reads it."""

    type: str
    data: dict[str, Any]
    conversation_id: int | None = None
    seq: int | None = None
    user_id: int | None = None
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    ts: int = field(default_factory=lambda: int(time.time() * 1000))  # Unix milliseconds
    v: int = ENVELOPE_VERSION

    def __post_init__(self) -> None:
        if self.type not in EVENT_TYPES:
            raise InvalidEvent(f"unknown event type {self.type!r}")
        if (self.conversation_id is None) == (self.user_id is None):
            raise InvalidEvent("an event has exactly one audience: conversation_id or user_id")

    @property
    def channel(self) -> str:
        """The one channel this event is published on."""
        if self.conversation_id is not None:
            return conversation_channel(self.conversation_id)
        assert self.user_id is not None
        return user_channel(self.user_id)

    def encode(self) -> bytes:
        return orjson.dumps(
            {
                "v": self.v,
                "id": self.id,
                "type": self.type,
                "ts": self.ts,
                "conversation_id": self.conversation_id,
                "seq": self.seq,
                "user_id": self.user_id,
                "data": self.data,
            }
        )


def decode(payload: bytes | str) -> Event:
    """Parse and check an envelope; raise :class:`InvalidEvent` on anything else."""
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise InvalidEvent(f"not JSON: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("v") != ENVELOPE_VERSION:
        raise InvalidEvent("not a version 1 envelope")
    try:
        return Event(
            type=str(doc["type"]),
            data=dict(doc["data"]),
            conversation_id=_opt_int(doc.get("conversation_id")),
            seq=_opt_int(doc.get("seq")),
            user_id=_opt_int(doc.get("user_id")),
            id=str(doc["id"]),
            ts=int(doc["ts"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidEvent(f"bad envelope: {exc}") from exc


def _opt_int(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected an integer, got {value!r}")
    number: int = value
    return number
