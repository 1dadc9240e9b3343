"""GET /v1/attachments/{attachment_id}: a short-lived download URL, for members only.

The file itself is served by S3 from the presigned URL. See docs/files.md.
"""

from __future__ import annotations

import flask
import functions_framework
from pydantic import BaseModel, Field

from whatschat import files
from whatschat.api import Call, Empty, Reply, Router
from whatschat.files import DownloadLink

router = Router("downloads")


class DownloadQuery(BaseModel):
    redirect: bool = Field(False, description="answer 302 to the file instead of JSON")


@router.route(
    "GET",
    "/v1/attachments/{attachment_id:uuid}",
    query=DownloadQuery,
    response=DownloadLink,
    errors=(404, 410, 503),
    also=((302, "With redirect=1: Location is the presigned URL"),),
)
def get_download_link(call: Call[Empty, DownloadQuery]) -> Reply:
    """A presigned GET URL (attachment disposition) for a file sent in a
    conversation you can read, or uploaded by you; 404 otherwise.

    With ``?redirect=1`` the answer is a 302 to that URL. 410 attachment-gone
    when the stored file was lost.
    """
    link = files.download_link(call.user_id, call.path["attachment_id"])
    if call.query.redirect:
        return Reply(None, 302, {"Location": link.url})
    return Reply(link, 200)


@functions_framework.http
def downloads(request: flask.Request) -> flask.Response:
    return router.handle(request)
