"""The gateway's sans-I/O core: protocol parsing, framing, resume ordering, routing."""

from __future__ import annotations

import orjson
import pytest

from gateway.protocol import (
    Auth,
    Hello,
    Ping,
    PresenceQuery,
    ProtocolError,
    Typing,
    parse_client_frame,
    text_frame,
)
from gateway.routing import CONVERSATION, USER, Router
from gateway.session import Session, membership_change
from whatschat.events import Event
from whatschat.storage.pubsub import encode_command, parse_reply


def frame_for(seq: int | None, cid: int = 7) -> bytes:
    return text_frame(orjson.dumps({"seq": seq, "conversation_id": cid}))


def seqs(frames: list[bytes]) -> list[int | None]:
    return [orjson.loads(unframe(f))["seq"] for f in frames]


def unframe(frame: bytes) -> bytes:
    assert frame[0] == 0x81
    size = frame[1]
    if size == 126:
        return frame[4:]
    if size == 127:
        return frame[10:]
    return frame[2:]


class Recorder:
    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.gaps: list[int] = []
        self.overflowed = False

    def session(self, held_max: int = 100, user_id: int = 1) -> Session:
        return Session(
            "s",
            user_id,
            self.frames.append,
            held_max=held_max,
            on_gap=lambda s, cid: self.gaps.append(cid),
            on_overflow=lambda s: setattr(self, "overflowed", True),
        )


# --- protocol -----------------------------------------------------------------


def test_hello_with_positions_parses_keys_as_conversation_ids() -> None:
    frame = parse_client_frame('{"op":"hello","token":"t","positions":{"3":10,"4":0}}')
    assert frame == Hello("t", {3: 10, 4: 0})
    assert parse_client_frame('{"op":"hello","token":"t"}') == Hello("t", None)


@pytest.mark.parametrize(
    ("data", "code"),
    [
        ("not json", "bad_json"),
        ("[1]", "bad_frame"),
        ('{"op": 3}', "bad_frame"),
        ('{"op":"dance"}', "unknown_op"),
        ('{"op":"hello"}', "bad_field"),
        ('{"op":"hello","token":"t","v":2}', "unsupported_version"),
        ('{"op":"hello","token":"t","positions":{"x":1}}', "bad_field"),
        ('{"op":"hello","token":"t","positions":{"1":-1}}', "bad_field"),
        ('{"op":"hello","token":"t","positions":[1]}', "bad_field"),
        ('{"op":"typing","conversation_id":"7"}', "bad_field"),
        ('{"op":"typing","conversation_id":true}', "bad_field"),
        ('{"op":"typing","conversation_id":7,"typing":"yes"}', "bad_field"),
        ('{"op":"ping","id":[1]}', "bad_field"),
        (b'{"op":"ping"}', "binary_frame"),
    ],
)
def test_bad_frames_raise_protocol_errors(data: str | bytes, code: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_client_frame(data)
    assert caught.value.code == code


def test_other_ops_parse() -> None:
    assert parse_client_frame('{"op":"auth","token":"x"}') == Auth("x")
    assert parse_client_frame('{"op":"ping","id":5}') == Ping(5)
    assert parse_client_frame('{"op":"typing","conversation_id":9}') == Typing(9, True)
    assert parse_client_frame('{"op":"presence.query"}') == PresenceQuery()


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536, 70000])
def test_text_frame_header_encodes_every_length_class(size: int) -> None:
    payload = b"x" * size
    frame = text_frame(payload)
    assert frame[0] == 0x81  # FIN + text, unmasked
    assert frame.endswith(payload)
    header = len(frame) - size
    assert header == (2 if size < 126 else 4 if size < 65536 else 10)
    if header == 4:
        assert int.from_bytes(frame[2:4], "big") == size
    if header == 10:
        assert int.from_bytes(frame[2:10], "big") == size


# --- session ordering -----------------------------------------------------------


def test_live_events_in_order_are_written_once() -> None:
    rec = Recorder()
    s = rec.session()
    s.hold(7, 0, 0)
    s.replay(7, [], up_to=0)
    for seq in (1, 2, 2, 1, 3):
        s.deliver(7, seq, frame_for(seq))
    assert seqs(rec.frames) == [1, 2, 3]


def test_resume_replays_then_flushes_held_without_duplicates() -> None:
    rec = Recorder()
    s = rec.session()
    s.hold(7, 3, 0)  # client saw up to 3
    # live events arrive while PostgreSQL is read: 5 and 6, plus an edit (no seq)
    s.deliver(7, 5, frame_for(5))
    s.deliver(7, None, frame_for(None))
    s.deliver(7, 6, frame_for(6))
    assert rec.frames == []
    s.replay(7, [(4, frame_for(4)), (5, frame_for(5))], up_to=5)
    assert seqs(rec.frames) == [4, 5, 6, None]
    s.deliver(7, 7, frame_for(7))
    assert seqs(rec.frames)[-1] == 7
    assert rec.gaps == []
    assert s.held_count == 0


def test_out_of_order_live_event_is_held_and_reported_as_a_gap() -> None:
    rec = Recorder()
    s = rec.session()
    s.hold(7, 0, 0)
    s.replay(7, [], up_to=0)
    s.deliver(7, 1, frame_for(1))
    s.deliver(7, 3, frame_for(3))
    assert seqs(rec.frames) == [1]
    assert rec.gaps == [7]
    assert s.gap(7) == (1, 3)
    s.deliver(7, 4, frame_for(4))  # still waiting: reported only once
    assert rec.gaps == [7]
    s.deliver(7, 2, frame_for(2))  # the late one arrives: everything flows
    assert seqs(rec.frames) == [1, 2, 3, 4]
    assert s.gap(7) is None


def test_gap_filled_from_the_database() -> None:
    rec = Recorder()
    s = rec.session()
    s.hold(7, 0, 0)
    s.replay(7, [], up_to=0)
    s.deliver(7, 3, frame_for(3))
    s.fill(7, [(1, frame_for(1)), (2, frame_for(2))])
    assert seqs(rec.frames) == [1, 2, 3]


def test_catch_up_skips_ahead_and_drops_older_live_events() -> None:
    rec = Recorder()
    s = rec.session()
    s.hold(7, 0, 0)
    s.deliver(7, 900, frame_for(900))
    s.deliver(7, 1001, frame_for(1001))
    s.replay(7, [], up_to=1000, catch_up=True)
    assert seqs(rec.frames) == [1001]
    assert s.positions() == {7: 1001}


def test_joined_seq_bounds_the_start() -> None:
    rec = Recorder()
    s = rec.session()
    s.hold(7, 0, joined_seq=10)
    s.deliver(7, 9, frame_for(9))
    s.replay(7, [(11, frame_for(11))], up_to=11)
    assert seqs(rec.frames) == [11]


def test_too_many_held_events_overflow() -> None:
    rec = Recorder()
    s = rec.session(held_max=3)
    s.hold(7, 0, 0)
    for seq in range(1, 5):
        s.deliver(7, seq, frame_for(seq))
    assert rec.overflowed
    s.deliver(7, 5, frame_for(5))
    assert rec.frames == []  # closed: nothing more is written


def test_forget_stops_delivery() -> None:
    rec = Recorder()
    s = rec.session()
    s.hold(7, 0, 0)
    s.replay(7, [], up_to=0)
    s.forget(7)
    s.deliver(7, 1, frame_for(1))
    assert rec.frames == []


def test_membership_change_reads_the_conversation_id() -> None:
    assert membership_change({"type": "member.added", "data": {"conversation_id": 4}}) == (
        "joined",
        4,
    )
    assert membership_change({"type": "group.created", "data": {"conversation": {"id": 5}}}) == (
        "joined",
        5,
    )
    assert membership_change({"type": "member.removed", "data": {"conversation_id": 4}}) == (
        "left",
        4,
    )
    assert membership_change({"type": "message.created", "data": {}}) is None
    assert membership_change({"type": "member.added", "data": {"conversation_id": "4"}}) is None


# --- router -------------------------------------------------------------------


def test_router_reference_counts_channels() -> None:
    router = Router(on_membership=lambda s, k, c: None)
    rec = Recorder()
    a, b = rec.session(user_id=1), rec.session(user_id=2)
    key = router.conversation_key(7)
    assert router.attach(a, key, CONVERSATION, 7) is True
    assert router.attach(b, key, CONVERSATION, 7) is False
    assert router.detach(a, key) is False
    assert router.detach(a, key) is False  # not attached twice
    assert router.detach(b, key) is True
    assert router.wanted() == []


def test_router_writes_the_same_frame_bytes_to_every_session() -> None:
    router = Router(on_membership=lambda s, k, c: None)
    rec_a, rec_b = Recorder(), Recorder()
    a, b = rec_a.session(user_id=1), rec_b.session(user_id=2)
    for s in (a, b):
        s.hold(7, 0, 0)
        s.replay(7, [], up_to=0)
        router.attach(s, router.conversation_key(7), CONVERSATION, 7)
    payload = Event("message.created", {"message": {}}, conversation_id=7, seq=1).encode()
    router.dispatch(router.conversation_key(7), payload)
    router.dispatch(router.conversation_key(7), b"garbage")
    router.dispatch(router.conversation_key(7), payload.replace(b'"v":1', b'"v":9'))
    assert rec_a.frames == rec_b.frames == [text_frame(payload)]
    assert rec_a.frames[0] is rec_b.frames[0]  # encoded once
    assert router.stats.events == 1
    assert router.stats.dropped == 2


def test_router_reports_membership_changes_from_the_user_channel() -> None:
    changes: list[tuple[int, str, int]] = []
    router = Router(on_membership=lambda s, k, c: changes.append((s.user_id, k, c)))
    rec = Recorder()
    s = rec.session(user_id=3)
    router.attach(s, router.user_key(3), USER, 3)
    payload = Event("member.added", {"conversation_id": 12}, user_id=3).encode()
    router.dispatch(router.user_key(3), payload)
    assert changes == [(3, "joined", 12)]
    assert rec.frames == [text_frame(payload)]


def test_presence_goes_to_direct_contacts_once_and_not_to_the_user() -> None:
    router = Router(on_membership=lambda s, k, c: None)
    rec_peer, rec_self = Recorder(), Recorder()
    peer, me = rec_peer.session(user_id=2), rec_self.session(user_id=1)
    for cid in (7, 8):
        router.attach(peer, router.conversation_key(cid), CONVERSATION, cid)
    router.attach(me, router.conversation_key(7), CONVERSATION, 7)
    router.dispatch_presence(
        orjson.dumps({"user_id": 1, "online": True, "last_seen": None, "conversations": [7, 8]})
    )
    assert len(rec_peer.frames) == 1
    assert orjson.loads(unframe(rec_peer.frames[0]))["op"] == "presence"
    assert rec_self.frames == []


# --- RESP reader --------------------------------------------------------------


def test_resp_parser_reads_messages_and_waits_for_partial_input() -> None:
    msg = b"*3\r\n$7\r\nmessage\r\n$6\r\nwc:c:7\r\n$5\r\nhello\r\n"
    assert parse_reply(msg, 0) == ([b"message", b"wc:c:7", b"hello"], len(msg))
    for cut in range(1, len(msg)):
        assert parse_reply(msg[:cut], 0) is None
    sub = b"*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n"
    assert parse_reply(sub, 0) == ([b"subscribe", b"a", 1], len(sub))
    assert encode_command(b"PING") == b"*1\r\n$4\r\nPING\r\n"


# --- the written contract -----------------------------------------------------


def test_docs_list_every_close_code_and_error_code() -> None:
    import re
    from pathlib import Path

    import yaml

    from gateway.protocol import CloseCode

    root = Path(__file__).resolve().parent.parent
    prose = (root / "docs" / "gateway.md").read_text()
    for code in CloseCode:
        assert f"| {int(code)} |" in prose, f"close code {int(code)} missing in docs/gateway.md"
    contract = yaml.safe_load((root / "docs" / "asyncapi-gateway.yaml").read_text())
    messages = contract["components"]["messages"]
    documented = set(messages["error"]["payload"]["properties"]["code"]["enum"])
    source = "".join(p.read_text() for p in (root / "gateway").glob("*.py"))
    used = set(re.findall(r'(?:ProtocolError|error_frame)\(\s*"([a-z_]+)"', source))
    assert used and used <= documented, used - documented
    client_ops = {
        messages[name]["payload"]["properties"]["op"]["const"]
        for name in ("hello", "auth", "ping", "typingRequest", "presenceQuery")
    }
    assert client_ops == {"hello", "auth", "ping", "typing", "presence.query"}
    for op in client_ops - {"hello"}:
        frame = {"op": op, "token": "t", "conversation_id": 1}
        parse_client_frame(orjson.dumps(frame).decode())  # every documented op parses
