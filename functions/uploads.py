"""POST /v1/uploads and POST /v1/uploads/{upload_id}/complete: presigned uploads.

The client asks for an upload, POSTs the file straight to S3 with the form
it got, then completes it here; the answer is the attachment to send in a
message. See docs/files.md.
"""

from __future__ import annotations

import flask
import functions_framework

from whatschat import file_types, files
from whatschat.api import Call, Empty, Reply, Router
from whatschat.config import get_settings
from whatschat.files import Attachment, UploadRequest, UploadTicket

# An allowlist naming a type without a content check stops the function at
# start instead of failing every upload.
file_types.allowed_types(get_settings().upload_content_types)

router = Router("uploads")


@router.route(
    "POST",
    "/v1/uploads",
    body=UploadRequest,
    response=UploadTicket,
    status=201,
    errors=(404, 413, 415, 422, 503),
)
def request_upload(call: Call[UploadRequest, Empty]) -> Reply:
    """Get a presigned POST for one file of a conversation you are a member of.

    413 file-too-large and 415 file-type-not-allowed refer to the declared
    file; 404 when you are not a member. Nothing is recorded yet.
    """
    return Reply(files.request_upload(call.user_id, call.body), 201)


@router.route(
    "POST",
    "/v1/uploads/{upload_id}/complete",
    response=Attachment,
    status=201,
    errors=(404, 409, 422, 503),
    also=((200, "Already completed: the same attachment"),),
)
def complete_upload(call: Call[Empty, Empty]) -> Reply:
    """Check the uploaded file (exists, declared size, content matches its type)
    and record it as an attachment: 201 the first time, 200 when already done.

    422 upload-mismatch: the file was rejected and removed; 404: nothing was
    uploaded for this id (or it expired).
    """
    attachment, created = files.complete_upload(call.user_id, call.path["upload_id"])
    return Reply(attachment, 201 if created else 200)


@functions_framework.http
def uploads(request: flask.Request) -> flask.Response:
    return router.handle(request)
