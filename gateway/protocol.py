"""The client protocol: frames a client may send, frames the gateway sends, close codes.

Plain functions and data, no I/O. Every frame is one JSON text message.
Control frames carry ``"op"``; event frames are the event envelope itself
(whatschat/events.py), byte for byte as published, so an event is encoded
once whatever the number of recipients. See docs/gateway.md ("Protocol").
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import orjson

PROTOCOL_VERSION = 1

# Client messages handled per socket and second; beyond it they are dropped
# (one rate_limited error per second says so). Typing, pings and presence
# queries are all far below it in normal use.
CLIENT_FRAMES_PER_SECOND = 50


class CloseCode(IntEnum):
    """Close codes the gateway uses (4000-4999 are ours; RFC 6455 codes otherwise)."""

    PROTOCOL_ERROR = 1002  # a frame that breaks RFC 6455 (sent by the library)
    MESSAGE_TOO_BIG = 1009  # a frame above GATEWAY_MAX_FRAME_BYTES (sent by the library)
    INTERNAL_ERROR = 1011  # also: no pong within the ping timeout
    SERVICE_RESTART = 1012  # draining: reconnect (to another instance) and resume
    TRY_AGAIN_LATER = 1013  # Redis or PostgreSQL unavailable while starting the session
    AUTH_FAILED = 4001  # invalid token in hello/auth, or an auth frame for another user
    AUTH_TIMEOUT = 4002  # no hello within GATEWAY_AUTH_TIMEOUT_SECONDS
    TOKEN_EXPIRED = 4003  # the token expired and no fresh one came in an auth frame
    HELLO_REQUIRED = 4004  # the first frame was not a valid hello
    SLOW_CONSUMER = 4008  # the send buffer passed GATEWAY_SEND_BUFFER_BYTES: resume
    RESUME_REQUIRED = 4009  # too many live events held during a replay: resume
    TOO_MANY_CONNECTIONS = 4029  # GATEWAY_MAX_CONNECTIONS_PER_USER reached on this instance


class ProtocolError(ValueError):
    """A client frame the gateway cannot act on; answered with an error frame."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code  # machine-readable, listed in docs/gateway.md
        self.detail = detail  # for humans


@dataclass(frozen=True)
class Hello:
    """First frame: who the client is and, when resuming, what it last saw."""

    token: str
    # conversation_id -> last seq the client holds; None: a fresh start (no replay)
    positions: dict[int, int] | None


@dataclass(frozen=True)
class Auth:
    """A fresh access token for the live session (before the old one expires)."""

    token: str


@dataclass(frozen=True)
class Ping:
    """Application-level ping (the WebSocket ping is the library's); echoes ``id``."""

    id: Any


@dataclass(frozen=True)
class Typing:
    """The user is (or stopped) typing in a conversation."""

    conversation_id: int
    typing: bool


@dataclass(frozen=True)
class PresenceQuery:
    """Ask for the online state and last seen of the user's direct contacts."""


ClientFrame = Hello | Auth | Ping | Typing | PresenceQuery


def _int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0 or value >= 2**63:
        raise ProtocolError("bad_field", f"{name} must be a non-negative integer")
    number: int = value
    return number


def _token(doc: dict[str, Any]) -> str:
    token = doc.get("token")
    if not isinstance(token, str) or not token or len(token) > 4096:
        raise ProtocolError("bad_field", "token must be a non-empty string")
    return token


def parse_client_frame(data: str | bytes) -> ClientFrame:
    """Parse and validate one client frame; raise :class:`ProtocolError` otherwise."""
    if isinstance(data, bytes):
        raise ProtocolError("binary_frame", "frames are JSON text frames")
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError("bad_json", f"not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ProtocolError("bad_frame", "a frame is a JSON object")
    op = doc.get("op")
    if op == "hello":
        version = doc.get("v", PROTOCOL_VERSION)
        if version != PROTOCOL_VERSION:
            raise ProtocolError("unsupported_version", f"protocol version {version!r} unknown")
        raw = doc.get("positions")
        positions: dict[int, int] | None = None
        if raw is not None:
            if not isinstance(raw, dict):
                raise ProtocolError("bad_field", "positions maps conversation ids to seqs")
            positions = {}
            for key, seq in raw.items():
                try:
                    cid = int(key)
                except ValueError:
                    raise ProtocolError("bad_field", "keys are conversation ids") from None
                positions[_int(cid, "conversation id")] = _int(seq, "position")
        return Hello(_token(doc), positions)
    if op == "auth":
        return Auth(_token(doc))
    if op == "ping":
        ping_id = doc.get("id")
        if not isinstance(ping_id, str | int | None) or isinstance(ping_id, bool):
            raise ProtocolError("bad_field", "id must be a string or an integer")
        if isinstance(ping_id, str) and len(ping_id) > 64:
            raise ProtocolError("bad_field", "id is at most 64 characters")
        return Ping(ping_id)
    if op == "typing":
        typing = doc.get("typing", True)
        if not isinstance(typing, bool):
            raise ProtocolError("bad_field", "typing must be true or false")
        return Typing(_int(doc.get("conversation_id"), "conversation_id"), typing)
    if op == "presence.query":
        return PresenceQuery()
    if not isinstance(op, str):
        raise ProtocolError("bad_frame", "a frame names its op")
    raise ProtocolError("unknown_op", f"unknown op {op[:32]!r}")


# --- frames the gateway sends -------------------------------------------------


def _dump(doc: dict[str, Any]) -> bytes:
    return orjson.dumps(doc, option=orjson.OPT_NON_STR_KEYS)


def ready_frame(
    session_id: str,
    user_id: int,
    expires_at: int,
    conversations: dict[int, dict[str, Any]],
    limits: dict[str, Any],
) -> bytes:
    """The session is live: every missed message has been sent before this frame."""
    return _dump(
        {
            "op": "ready",
            "v": PROTOCOL_VERSION,
            "session_id": session_id,
            "user_id": user_id,
            "expires_at": expires_at,
            "conversations": conversations,
            "limits": limits,
        }
    )


def error_frame(code: str, detail: str) -> bytes:
    return _dump({"op": "error", "code": code, "detail": detail})


def pong_frame(ping_id: Any) -> bytes:
    return _dump({"op": "pong", "id": ping_id})


def authed_frame(expires_at: int) -> bytes:
    return _dump({"op": "authed", "expires_at": expires_at})


def catch_up_frame(conversation_id: int, after_seq: int, up_to_seq: int) -> bytes:
    """Too far behind to replay: fetch (after_seq, up_to_seq] through GET history."""
    return _dump(
        {
            "op": "catch_up",
            "conversation_id": conversation_id,
            "after_seq": after_seq,
            "up_to_seq": up_to_seq,
        }
    )


def resumed_frame(reason: str, positions: dict[int, int]) -> bytes:
    """The live stream broke and was repaired from PostgreSQL (``reason`` says why)."""
    return _dump({"op": "resumed", "reason": reason, "positions": positions})


def left_frame(conversation_id: int, last_seq: int) -> bytes:
    """The user is no longer a member: nothing after ``last_seq`` will come."""
    return _dump({"op": "left", "conversation_id": conversation_id, "last_seq": last_seq})


def presence_frame(user_id: int, online: bool, last_seen: int | None) -> bytes:
    return _dump({"op": "presence", "user_id": user_id, "online": online, "last_seen": last_seen})


def presence_state_frame(users: list[dict[str, Any]]) -> bytes:
    return _dump({"op": "presence.state", "users": users})


# --- WebSocket framing --------------------------------------------------------


def text_frame(payload: bytes) -> bytes:
    """The complete unmasked WebSocket text frame (FIN, opcode 1) carrying ``payload``.

    A server's frames are never masked (RFC 6455, section 5.1), so these bytes
    are the same for every recipient: the router builds them once per event.
    ``payload`` must be UTF-8 (JSON from orjson is).
    """
    size = len(payload)
    if size < 126:
        return bytes((0x81, size)) + payload
    if size < 65536:
        return b"\x81\x7e" + size.to_bytes(2, "big") + payload
    return b"\x81\x7f" + size.to_bytes(8, "big") + payload
