"""Files: presigned uploads, their completion, downloads, orphan cleanup.

The operations behind the ``uploads``, ``downloads`` and ``orphan_sweeper``
functions. File bytes never pass through a function: clients POST them to S3
with a presigned policy, and this module checks what arrived before recording
it. docs/files.md walks through the flow, the saga and its compensations.
"""

from __future__ import annotations

import logging
import re
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal
from urllib.parse import unquote

from pydantic import BaseModel, ConfigDict, Field

from whatschat import file_types, reads
from whatschat.config import get_settings
from whatschat.problems import DependencyUnavailable, Problem
from whatschat.storage import attachments, database, members, objects
from whatschat.storage.attachments import AttachmentRow
from whatschat.storage.bucket_setup import FILES_PREFIX, INCOMING_PREFIX

logger = logging.getLogger(__name__)

# "<conversation id>.<32 hex digits>": enough for `complete` to find the
# upload's object, and the random part makes it unguessable.
_UPLOAD_ID = re.compile(r"([1-9][0-9]{0,17})\.([0-9a-f]{32})")
# User metadata the upload form pins (the policy allows no other value).
_META_FILE_NAME = "file-name"
_META_DECLARED_SIZE = "declared-size"


class UploadRequest(BaseModel):
    """What the client means to upload, and where."""

    model_config = ConfigDict(extra="forbid")

    conversation_id: int = Field(gt=0, description="a conversation the caller is a member of")
    file_name: str = Field(min_length=1, max_length=1024, description="shown to recipients")
    content_type: str = Field(min_length=3, max_length=255, examples=["image/png"])
    size_bytes: int = Field(gt=0, description="the file's exact length in bytes")


class UploadTicket(BaseModel):
    """How to upload: POST ``fields`` plus the file (as the last field, ``file``)
    as multipart/form-data to ``url`` before ``expires_at``, then POST to
    ``complete_url``."""

    upload_id: str
    attachment_id: uuid.UUID  # the id the attachment will have once completed
    method: Literal["POST"] = "POST"
    url: str
    fields: dict[str, str]
    expires_at: datetime
    complete_url: str  # path on this API
    file_name: str  # the name as it will be stored (cleaned)
    content_type: str  # the type the upload must carry
    size_bytes: int


class Attachment(BaseModel):
    """A completed, verified upload; send it in a message with ``attachment_id``."""

    id: uuid.UUID
    conversation_id: int
    uploader_id: int
    file_name: str
    content_type: str
    size_bytes: int
    created_at: datetime


class DownloadLink(BaseModel):
    """A short-lived GET URL for one attachment."""

    url: str
    expires_at: datetime
    attachment: Attachment


@dataclass(frozen=True)
class SweepReport:
    """What one orphan sweep removed."""

    incoming_deleted: int  # uploads never completed
    files_deleted: int  # copies no attachment row names (failed compensations, deleted rows)
    files_checked: int  # old enough `files/` objects looked up in the database


def upload_id(conversation_id: int, attachment_id: uuid.UUID) -> str:
    return f"{conversation_id}.{attachment_id.hex}"


def incoming_key(conversation_id: int, uploader_id: int, attachment_id: uuid.UUID) -> str:
    """Where the client uploads: scoped to conversation and uploader."""
    return f"{INCOMING_PREFIX}{conversation_id}/{uploader_id}/{attachment_id}"


def _public(row: AttachmentRow) -> Attachment:
    assert row.created_at is not None
    return Attachment(
        id=row.id,
        conversation_id=row.conversation_id,
        uploader_id=row.uploader_id,
        file_name=row.file_name,
        content_type=row.content_type,
        size_bytes=row.size_bytes,
        created_at=row.created_at,
    )


def _not_a_member(conversation_id: int) -> Problem:
    # 404, not 403: a non-member learns nothing about the conversation.
    return Problem("not-found", f"No conversation {conversation_id}")


def _is_current_member(conn: database.Connection, conversation_id: int, user_id: int) -> bool:
    row = members.membership_txn(conn, conversation_id, user_id)
    return row is not None and row["left_seq"] is None


def _require_member(conversation_id: int, user_id: int) -> None:
    """404 unless the user is a current member (the replica first; a member
    added a moment ago and not yet on the replica is found on the primary)."""

    def check(reader: reads.Reader) -> None:
        if not _is_current_member(reader.conn, conversation_id, user_id):
            raise _not_a_member(conversation_id)

    reads.read(check)


def request_upload(user_id: int, request: UploadRequest) -> UploadTicket:
    """Check the declaration and hand out a presigned POST for it. Writes nothing."""
    settings = get_settings()
    content_type = file_types.normalize(request.content_type)
    allowed = file_types.allowed_types(settings.upload_content_types)
    if content_type not in allowed:
        raise Problem(
            "file-type-not-allowed",
            f"{content_type} files are not allowed; allowed: {', '.join(allowed)}",
            extra={"allowed": list(allowed)},
        )
    if request.size_bytes > settings.max_upload_bytes:
        raise Problem(
            "file-too-large",
            f"Files may be at most {settings.max_upload_bytes} bytes",
            extra={"max_bytes": settings.max_upload_bytes},
        )
    file_name = file_types.clean_file_name(request.file_name)
    if not file_name:
        raise Problem(
            "validation-failed",
            "The file name has no usable characters",
            errors=[{"field": "file_name", "message": "no usable characters", "type": "value"}],
        )
    _require_member(request.conversation_id, user_id)
    # Signing needs no network; check S3 answers so a client is not handed a
    # URL for a store that is down.
    objects.ping()
    attachment_id = uuid.uuid4()
    key = incoming_key(request.conversation_id, user_id, attachment_id)
    ttl = settings.upload_url_ttl_seconds
    url, fields = objects.presigned_post(
        key,
        {
            "Content-Type": content_type,
            f"x-amz-meta-{_META_FILE_NAME}": file_types.encode_metadata(file_name),
            f"x-amz-meta-{_META_DECLARED_SIZE}": str(request.size_bytes),
        },
        content_length=request.size_bytes,
        expires_in=ttl,
    )
    uid = upload_id(request.conversation_id, attachment_id)
    return UploadTicket(
        upload_id=uid,
        attachment_id=attachment_id,
        url=url,
        fields=fields,
        expires_at=datetime.now(UTC) + timedelta(seconds=ttl),
        complete_url=f"/v1/uploads/{uid}/complete",
        file_name=file_name,
        content_type=content_type,
        size_bytes=request.size_bytes,
    )


def _parse_upload_id(value: str) -> tuple[int, uuid.UUID]:
    match = _UPLOAD_ID.fullmatch(value)
    if match is None:
        raise Problem("not-found", "No such upload")
    return int(match.group(1)), uuid.UUID(hex=match.group(2))


def _mismatch(detail: str, *keys: str) -> Problem:
    """Reject the upload: its objects are removed first, so nothing stays behind."""
    for key in keys:
        _delete_quietly(key)
    return Problem("upload-mismatch", detail)


def _delete_quietly(key: str) -> bool:
    """Best-effort removal; a failure leaves an orphan the sweeper removes later."""
    try:
        objects.delete(key)
    except DependencyUnavailable as exc:
        logger.warning("could not delete %s (the orphan sweeper will): %s", key, exc)
        return False
    return True


def _check_declaration(info: objects.ObjectInfo) -> tuple[str, str, int]:
    """(content type, file name, size) of an uploaded object, or a Problem."""
    settings = get_settings()
    content_type = file_types.normalize(info.content_type)
    if content_type not in file_types.allowed_types(settings.upload_content_types):
        raise _mismatch(f"The upload carries type {content_type!r}, which is not allowed", info.key)
    declared = info.metadata.get(_META_DECLARED_SIZE, "")
    if not declared.isdigit() or int(declared) != info.size:
        raise _mismatch(
            f"The upload is {info.size} bytes but {declared or 'no size'} was declared", info.key
        )
    if not 0 < info.size <= settings.max_upload_bytes:
        raise _mismatch(
            f"The upload is {info.size} bytes; files may be 1 to {settings.max_upload_bytes} bytes",
            info.key,
        )
    file_name = file_types.clean_file_name(unquote(info.metadata.get(_META_FILE_NAME, "")))
    return content_type, file_name or "file", info.size


def complete_upload(user_id: int, upload: str) -> tuple[Attachment, bool]:
    """Verify an uploaded object and record it; returns (attachment, created now).

    The saga (docs/files.md): check membership; HEAD the upload and check its
    declaration; copy it to a private ``files/`` key; read the copy's first
    bytes and check they fit the type; insert the row. A failed check removes
    the objects and answers 422; a failed insert removes the copy
    (compensation) and the client may retry. Completing again returns the
    recorded attachment.
    """
    conversation_id, attachment_id = _parse_upload_id(upload)
    with database.primary() as conn:
        if not _is_current_member(conn, conversation_id, user_id):
            raise _not_a_member(conversation_id)
        existing = attachments.get(conn, attachment_id)
    if existing is not None:
        if existing.uploader_id != user_id or existing.conversation_id != conversation_id:
            raise Problem("not-found", "No such upload")
        return _public(existing), False

    incoming = incoming_key(conversation_id, user_id, attachment_id)
    info = objects.head(incoming)
    if info is None:
        raise Problem(
            "not-found",
            "Nothing was uploaded for this upload id (or it expired): POST the file to the"
            " upload URL first",
        )
    content_type, file_name, size = _check_declaration(info)

    # Each completion works on its own copy, which no client can write to:
    # what is checked below is exactly what is kept.
    final = f"{FILES_PREFIX}{conversation_id}/{attachment_id}/{secrets.token_hex(8)}"
    try:
        objects.copy(
            incoming,
            final,
            content_type,
            {_META_FILE_NAME: file_types.encode_metadata(file_name)},
        )
    except objects.ObjectChanged as exc:
        raise Problem("not-found", "The upload disappeared; upload the file again") from exc
    try:
        head, total = objects.read_head(final, file_types.SAMPLE_BYTES)
    except objects.ObjectChanged as exc:
        _delete_quietly(final)
        raise Problem("conflict", "The upload changed while it was completed; retry") from exc
    if total != size:
        raise _mismatch(f"The upload is {total} bytes, not {size}", final, incoming)
    if not file_types.matches(content_type, head, whole=total <= len(head)):
        raise _mismatch(f"The file's content is not {content_type}", final, incoming)

    row = AttachmentRow(
        id=attachment_id,
        conversation_id=conversation_id,
        uploader_id=user_id,
        object_key=final,
        file_name=file_name,
        content_type=content_type,
        size_bytes=size,
    )
    try:
        with database.primary() as conn:
            inserted = attachments.insert(conn, row)
            winner = inserted or attachments.get(conn, attachment_id)
    except BaseException:
        # Compensation: the row was not recorded, so the copy must not stay.
        # The upload itself stays until it expires, so the client can retry.
        _delete_quietly(final)
        raise
    if inserted is None:
        # A concurrent completion of the same upload recorded its own copy first.
        _delete_quietly(final)
        if winner is None or winner.uploader_id != user_id:
            raise Problem("not-found", "No such upload")
        return _public(winner), False
    _delete_quietly(incoming)
    return _public(inserted), True


def _visible(attachment_id: uuid.UUID, user_id: int) -> AttachmentRow:
    """The attachment if the user may see it, else 404 (retried on the primary
    when the replica may not have the message or membership yet)."""

    def find(reader: reads.Reader) -> AttachmentRow:
        row = attachments.get_visible(reader.conn, attachment_id, user_id)
        if row is None:
            raise Problem("not-found", f"No attachment {attachment_id}")
        return row

    return reads.read(find)


def download_link(user_id: int, attachment_id: uuid.UUID) -> DownloadLink:
    """A presigned GET for an attachment the user may see (else 404)."""
    row = _visible(attachment_id, user_id)
    # HEAD first: S3 being down is a 503 now, not a broken link later, and a
    # lost object (a local stack restarted, moto keeps files in memory) is 410.
    if objects.head(row.object_key) is None:
        raise Problem("attachment-gone", f"The file of attachment {attachment_id} is lost")
    ttl = get_settings().download_url_ttl_seconds
    url = objects.presigned_get(
        row.object_key,
        ttl,
        content_type=file_types.served_type(row.content_type),
        disposition=file_types.content_disposition(row.file_name),
    )
    return DownloadLink(
        url=url, expires_at=datetime.now(UTC) + timedelta(seconds=ttl), attachment=_public(row)
    )


def sweep_orphans(
    now: datetime | None = None, scopes: tuple[str, ...] = ("incoming", "files")
) -> SweepReport:
    """Delete objects older than ``ORPHAN_GRACE_SECONDS`` that no row records.

    ``incoming`` removes uploads never completed (completion moves them to
    ``files/``). ``files`` lists every completed copy and removes those no
    attachment row names: copies a failed compensation left, and files of
    deleted conversations. The first is cheap; the second lists the whole
    prefix, so the cluster runs it less often (docs/files.md).
    """
    moment = now or datetime.now(UTC)
    before = moment - timedelta(seconds=get_settings().orphan_grace_seconds)
    incoming_deleted = files_deleted = files_checked = 0
    if "incoming" in scopes:
        for keys in objects.list_modified_before(INCOMING_PREFIX, before):
            incoming_deleted += objects.delete_many(keys)
    if "files" in scopes:
        for keys in objects.list_modified_before(FILES_PREFIX, before):
            files_checked += len(keys)
            # The primary: a replica a moment behind must never make a
            # recorded file look orphaned.
            with database.primary() as conn:
                recorded = attachments.recorded_keys(conn, keys)
            orphans = [key for key in keys if key not in recorded]
            files_deleted += objects.delete_many(orphans)
    return SweepReport(incoming_deleted, files_deleted, files_checked)
