"""The event envelope: the contract between publishers and the gateway."""

from __future__ import annotations

import orjson
import pytest

from whatschat import events


def test_round_trip_keeps_every_field() -> None:
    event = events.Event("message.created", {"text": "hi"}, conversation_id=7, seq=3)
    decoded = events.decode(event.encode())
    assert decoded == event
    assert decoded.channel == events.conversation_channel(7) == "wc:c:7"


def test_personal_events_go_to_the_user_channel() -> None:
    event = events.Event("member.added", {"conversation_id": 9}, user_id=5)
    assert event.channel == events.user_channel(5) == "wc:u:5"


@pytest.mark.parametrize(
    "payload",
    [
        b"not json",
        b"[]",
        orjson.dumps({"v": 2, "type": "message.created"}),
        orjson.dumps(
            {"v": 1, "id": "x", "type": "nope", "ts": 1, "conversation_id": 1, "data": {}}
        ),
        orjson.dumps({"v": 1, "id": "x", "type": "message.created", "ts": 1, "data": {}}),
        orjson.dumps(
            {
                "v": 1,
                "id": "x",
                "type": "message.created",
                "ts": 1,
                "conversation_id": "1",
                "data": {},
            }
        ),
        orjson.dumps(
            {
                "v": 1,
                "id": "x",
                "type": "message.created",
                "ts": 1,
                "conversation_id": 1,
                "user_id": 2,
                "data": {},
            }
        ),
    ],
)
def test_anything_else_is_rejected(payload: bytes) -> None:
    with pytest.raises(events.InvalidEvent):
        events.decode(payload)
