"""S3-compatible object storage (files): the only module that imports boto3.

boto3 is imported on first use, so functions that never touch files do not
pay for it at cold start (docs/operations.md, cold starts). Calls use short
timeouts and no retries storm: an unreachable S3 raises
:class:`ObjectStoreUnavailable` (503) quickly.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from whatschat.config import get_settings
from whatschat.problems import DependencyUnavailable

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


class ObjectStoreUnavailable(DependencyUnavailable):
    """S3 did not answer in time."""

    dependency = "Object storage"


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
                    retries={"max_attempts": 1, "mode": "standard"},
                    signature_version="s3v4",
                    s3={"addressing_style": "path"},
                ),
            )
            _clients[key] = found
        s3: S3Client = found
        return s3


def ensure_bucket() -> None:
    """Create the configured bucket if it does not exist (local stack, tests)."""
    from botocore.exceptions import BotoCoreError, ClientError

    s3 = client()
    bucket = get_settings().s3_bucket
    try:
        s3.head_bucket(Bucket=bucket)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket", "NotFound"):
            raise
        s3.create_bucket(Bucket=bucket)
    except BotoCoreError as exc:
        raise ObjectStoreUnavailable(str(exc)) from exc


def ping() -> None:
    """Raise ObjectStoreUnavailable unless the bucket answers HEAD."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        client().head_bucket(Bucket=get_settings().s3_bucket)
    except (BotoCoreError, ClientError) as exc:
        raise ObjectStoreUnavailable(str(exc)) from exc
