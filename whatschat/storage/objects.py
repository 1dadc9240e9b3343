"""S3-compatible object storage (files): the only module that imports boto3.

boto3 is imported on first use, so functions that never touch files do not
pay for it at cold start (docs/operations.md, cold starts). Calls use short
timeouts and a single attempt: an unreachable S3 raises
:class:`ObjectStoreUnavailable` (503) within ``S3_TIMEOUT_SECONDS`` instead of
retrying while the caller waits. What the files feature does with these calls
is in :mod:`whatschat.files` and docs/files.md.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from whatschat.config import get_settings
from whatschat.problems import DependencyUnavailable
from whatschat.storage import bucket_setup

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


class ObjectStoreUnavailable(DependencyUnavailable):
    """S3 did not answer in time (or answered with a server error)."""

    dependency = "Object storage"


class ObjectChanged(Exception):
    """The object is not the one a condition (ETag) named: it was replaced meanwhile."""


@dataclass(frozen=True)
class ObjectInfo:
    """What HEAD tells about one object."""

    key: str
    size: int  # bytes
    content_type: str  # as stored (from the upload's Content-Type field)
    etag: str  # quoted, as S3 returns it
    metadata: dict[str, str]  # user metadata, keys without the x-amz-meta- prefix
    last_modified: datetime


_clients: dict[tuple[str, str], Any] = {}
_lock = threading.Lock()


def client(public: bool = False) -> S3Client:
    """The S3 client; ``public=True`` signs URLs for the address clients use."""
    import boto3
    from botocore.config import Config

    settings = get_settings()
    endpoint = settings.s3_endpoint_url
    if public and settings.s3_public_endpoint_url:
        endpoint = settings.s3_public_endpoint_url
    key = (endpoint, settings.s3_access_key_id)
    with _lock:
        found = _clients.get(key)
        if found is None:
            found = boto3.client(
                "s3",
                endpoint_url=endpoint or None,
                region_name=settings.s3_region,
                aws_access_key_id=settings.s3_access_key_id or None,
                aws_secret_access_key=settings.s3_secret_access_key or None,
                config=Config(
                    connect_timeout=settings.s3_timeout_seconds,
                    read_timeout=settings.s3_timeout_seconds,
                    # One attempt in all: botocore's `max_attempts` would count
                    # retries, doubling the wait before a 503.
                    retries={"total_max_attempts": 1, "mode": "standard"},
                    signature_version="s3v4",
                    s3={"addressing_style": "path"},
                ),
            )
            _clients[key] = found
        s3: S3Client = found
        return s3


def _code(exc: Exception) -> str:
    response = getattr(exc, "response", {}) or {}
    return str(response.get("Error", {}).get("Code", ""))


def _status(exc: Exception) -> int:
    response = getattr(exc, "response", {}) or {}
    return int(response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)


_MISSING = ("404", "NoSuchKey", "NotFound")


@contextmanager
def _unavailable_on_failure() -> Iterator[None]:
    """Network failures, timeouts and 5xx answers become ObjectStoreUnavailable."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except BotoCoreError as exc:
        raise ObjectStoreUnavailable(str(exc)) from exc
    except ClientError as exc:
        if _status(exc) >= 500 or _code(exc) in ("SlowDown", "ServiceUnavailable"):
            raise ObjectStoreUnavailable(str(exc)) from exc
        raise


def _bucket() -> str:
    return get_settings().s3_bucket


def cors_origins() -> list[str]:
    """Web origins allowed to upload from a browser (``S3_CORS_ORIGINS``)."""
    return [o.strip() for o in get_settings().s3_cors_origins.split(",") if o.strip()]


def ensure_bucket() -> dict[str, str]:
    """Create the configured bucket if missing and apply its CORS and lifecycle
    rules (local stack, tests, ``whatschat setup-bucket``). Returns what was done."""
    settings = get_settings()
    with _unavailable_on_failure():
        return bucket_setup.apply(client(), _bucket(), cors_origins(), settings.s3_region)


def ping() -> None:
    """Raise ObjectStoreUnavailable unless the bucket answers HEAD."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        client().head_bucket(Bucket=_bucket())
    except (BotoCoreError, ClientError) as exc:
        raise ObjectStoreUnavailable(str(exc)) from exc


def presigned_post(
    key: str, fields: Mapping[str, str], content_length: int, expires_in: int
) -> tuple[str, dict[str, str]]:
    """URL and form fields for a browser-style POST upload of exactly ``key``.

    The signed policy pins the key, every field in ``fields`` (exact match)
    and the file's length to exactly ``content_length`` bytes. Signing is local;
    nothing is sent to S3.
    """
    conditions: list[Any] = [{name: value} for name, value in fields.items()]
    conditions.append(["content-length-range", content_length, content_length])
    post = client(public=True).generate_presigned_post(
        Bucket=_bucket(),
        Key=key,
        Fields=dict(fields),
        Conditions=conditions,
        ExpiresIn=expires_in,
    )
    return post["url"], {name: str(value) for name, value in post["fields"].items()}


def presigned_get(key: str, expires_in: int, content_type: str, disposition: str) -> str:
    """A GET URL for ``key`` whose response carries our Content-Type and
    Content-Disposition whatever the object was stored with."""
    url: str = client(public=True).generate_presigned_url(
        "get_object",
        Params={
            "Bucket": _bucket(),
            "Key": key,
            "ResponseContentType": content_type,
            "ResponseContentDisposition": disposition,
        },
        ExpiresIn=expires_in,
    )
    return url


def head(key: str) -> ObjectInfo | None:
    """The object's size, type, ETag and metadata; None when there is no such object."""
    from botocore.exceptions import ClientError

    try:
        with _unavailable_on_failure():
            found = client().head_object(Bucket=_bucket(), Key=key)
    except ClientError as exc:
        if _code(exc) in _MISSING:
            return None
        raise
    return ObjectInfo(
        key=key,
        size=int(found["ContentLength"]),
        content_type=found.get("ContentType", ""),
        etag=found["ETag"],
        metadata={k.lower(): v for k, v in found.get("Metadata", {}).items()},
        last_modified=found["LastModified"],
    )


def read_head(key: str, length: int) -> tuple[bytes, int]:
    """The first ``length`` bytes of ``key`` (one ranged GET) and the object's
    total size. Raises ObjectChanged when the object is gone or empty."""
    from botocore.exceptions import ClientError

    try:
        with _unavailable_on_failure():
            found = client().get_object(Bucket=_bucket(), Key=key, Range=f"bytes=0-{length - 1}")
            with found["Body"] as body:
                data: bytes = body.read(length)
    except ClientError as exc:
        if _code(exc) in (*_MISSING, "InvalidRange", "416"):
            raise ObjectChanged(key) from exc
        raise
    # "bytes 0-4095/12345": the total follows the slash.
    content_range = found.get("ContentRange", "")
    total = content_range.rpartition("/")[2]
    return data, int(total) if total.isdigit() else int(found["ContentLength"])


def copy(source: str, destination: str, content_type: str, metadata: Mapping[str, str]) -> str:
    """Server-side copy within the bucket, replacing type and metadata; returns
    the new object's ETag. Raises ObjectChanged when ``source`` is gone."""
    from botocore.exceptions import ClientError

    try:
        with _unavailable_on_failure():
            copied = client().copy_object(
                Bucket=_bucket(),
                Key=destination,
                CopySource={"Bucket": _bucket(), "Key": source},
                ContentType=content_type,
                Metadata=dict(metadata),
                MetadataDirective="REPLACE",
            )
    except ClientError as exc:
        if _code(exc) in _MISSING:
            raise ObjectChanged(source) from exc
        raise
    etag: str = copied["CopyObjectResult"]["ETag"]
    return etag


def delete(key: str) -> None:
    """Remove ``key`` (no error if it is already gone)."""
    with _unavailable_on_failure():
        client().delete_object(Bucket=_bucket(), Key=key)


def delete_many(keys: list[str]) -> int:
    """Remove up to 1000 keys in one request; returns how many S3 reported deleted."""
    if not keys:
        return 0
    with _unavailable_on_failure():
        result = client().delete_objects(
            Bucket=_bucket(),
            Delete={"Objects": [{"Key": key} for key in keys], "Quiet": False},
        )
    return len(result.get("Deleted", []))


def list_modified_before(prefix: str, before: datetime) -> Iterator[list[str]]:
    """Pages (at most 1000 keys each) of the keys under ``prefix`` last modified
    before ``before``."""
    paginator = client().get_paginator("list_objects_v2")
    pages = iter(paginator.paginate(Bucket=_bucket(), Prefix=prefix))
    while True:
        # Only the listing request is guarded: the caller's work between pages
        # raises its own errors.
        with _unavailable_on_failure():
            page = next(pages, None)
        if page is None:
            return
        keys = [item["Key"] for item in page.get("Contents", []) if item["LastModified"] < before]
        if keys:
            yield keys
