"""docs/asyncapi.yaml agrees with the code: event types, channels, and the
payload of every event the builders in whatschat/chat_events.py produce."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest
import yaml

from whatschat import chat_events, events
from whatschat.schemas import AttachmentView, MessageView

DOC = Path(__file__).resolve().parent.parent / "docs" / "asyncapi.yaml"


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(DOC.read_text())
    return loaded


def _view(seq: int = 3, **changes: Any) -> MessageView:
    values: dict[str, Any] = {
        "id": 10,
        "conversation_id": 7,
        "seq": seq,
        "sender_id": 2,
        "client_msg_id": "c-1",
        "kind": "text",
        "text": "hi",
        "reply_to_seq": None,
        "attachment": None,
        "system": None,
        "created_at": datetime.now(UTC),
        "edited_at": None,
        "deleted": False,
    }
    values.update(changes)
    return MessageView(**values)


def _system(seq: int, kind: str) -> MessageView:
    return _view(seq, sender_id=None, client_msg_id=None, kind="system", text=None,
                 system={"type": kind, "actor_id": 2})  # fmt: skip


# Every builder, with the component message that documents its output.
EXAMPLES: list[tuple[str, events.Event]] = [
    ("message.created", chat_events.message_created(_view())),
    (
        "message.created",
        chat_events.message_created(
            _view(
                kind="file",
                attachment=AttachmentView(
                    id=uuid.uuid4(), file_name="a.png", content_type="image/png", size_bytes=5
                ),
            )
        ),
    ),
    ("message.edited", chat_events.message_edited(_view(edited_at=datetime.now(UTC)), 4)),
    ("message.deleted", chat_events.message_deleted(_view(text=None, deleted=True), 5)),
    ("read.updated", chat_events.read_updated(7, 2, 3)),
    ("conversation.created", chat_events.conversation_created_for(2, 7, [2, 3], 2)),
    (
        "group.created",
        chat_events.group_created(
            _system(1, "group.created"), title="T", description=None, created_by=2, member_ids=[2]
        ),
    ),
    (
        "group.updated",
        chat_events.group_updated(
            _system(2, "group.updated"), title="T", description="d", actor_id=2
        ),
    ),
    (
        "member.added",
        chat_events.member_added(_system(3, "member.added"), user_id=4, role="member", actor_id=2),
    ),
    (
        "member.added.personal",
        chat_events.member_added_for(
            4, conversation_id=7, role="member", seq=3, joined_seq=2, actor_id=2
        ),
    ),
    (
        "member.removed",
        chat_events.member_removed(
            _system(4, "member.removed"), user_id=4, actor_id=2, reason="removed"
        ),
    ),
    (
        "member.removed.personal",
        chat_events.member_removed_for(4, conversation_id=7, left_seq=4, actor_id=4, reason="left"),
    ),
    (
        "member.role_changed",
        chat_events.member_role_changed(
            _system(5, "member.role_changed"), user_id=3, role="admin", actor_id=None
        ),
    ),
    # The gateway builds this one itself (gateway/server.py).
    ("typing", events.Event("typing", {"user_id": 2, "typing": True}, conversation_id=7)),
]


def _validator(doc: dict[str, Any], message: str) -> jsonschema.Draft7Validator:
    root = {**doc, "$ref": f"#/components/messages/{message}/payload"}
    return jsonschema.Draft7Validator(root)


def test_declares_asyncapi_3_and_exactly_the_event_types(doc: dict[str, Any]) -> None:
    assert str(doc["asyncapi"]).startswith("3.")
    assert doc["info"]["version"] == str(events.ENVELOPE_VERSION)
    names = {message["name"] for message in doc["components"]["messages"].values()}
    assert names == set(events.EVENT_TYPES)
    per_channel = {
        name: {ref["$ref"].rsplit("/", 1)[-1] for ref in channel["messages"].values()}
        for name, channel in doc["channels"].items()
    }
    assert per_channel["user"] == {
        "conversation.created",
        "member.added.personal",
        "member.removed.personal",
    }
    assert per_channel["user"] | per_channel["conversation"] == set(doc["components"]["messages"])


def test_channel_addresses_are_the_ones_events_py_builds(doc: dict[str, Any]) -> None:
    conversation = doc["channels"]["conversation"]["address"]
    user = doc["channels"]["user"]["address"]
    assert conversation.replace("{conversation_id}", "42") == events.conversation_channel(42)
    assert user.replace("{user_id}", "42") == events.user_channel(42)


def test_operations_reference_their_channels_messages(doc: dict[str, Any]) -> None:
    for operation in doc["operations"].values():
        channel = operation["channel"]["$ref"].rsplit("/", 1)[-1]
        for ref in operation.get("messages", []):
            prefix = f"#/channels/{channel}/messages/"
            assert ref["$ref"].startswith(prefix)
            assert ref["$ref"].removeprefix(prefix) in doc["channels"][channel]["messages"]


def test_the_message_view_schema_has_exactly_the_models_fields(doc: dict[str, Any]) -> None:
    schema = doc["components"]["schemas"]["MessageView"]
    assert set(schema["properties"]) == set(MessageView.model_fields)
    assert set(schema["required"]) == set(MessageView.model_fields)


@pytest.mark.parametrize(("message", "event"), EXAMPLES, ids=[m for m, _ in EXAMPLES])
def test_every_built_event_matches_its_documented_payload(
    doc: dict[str, Any], message: str, event: events.Event
) -> None:
    payload = orjson.loads(event.encode())
    _validator(doc, message).validate(payload)
    assert doc["components"]["messages"][message]["name"] == event.type


def test_the_schemas_do_reject_wrong_payloads(doc: dict[str, Any]) -> None:
    good = orjson.loads(chat_events.message_created(_view()).encode())
    validator = _validator(doc, "message.created")
    assert validator.is_valid(good)
    assert not validator.is_valid({**good, "seq": None})
    assert not validator.is_valid({**good, "data": {"message": {"id": 1}}})
    personal = orjson.loads(chat_events.member_added_for(
        4, conversation_id=7, role="member", seq=3, joined_seq=2, actor_id=2).encode())  # fmt: skip
    assert not _validator(doc, "member.added").is_valid(personal)
