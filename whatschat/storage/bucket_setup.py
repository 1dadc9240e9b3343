"""The files bucket's setup: create it, allow browser uploads (CORS), expire orphans.

The one implementation of the bucket's configuration. It is used three ways:

- :func:`whatschat.storage.objects.ensure_bucket` (``make dev``, the tests,
  ``whatschat setup-bucket``) calls :func:`apply` with the configured client;
- LocalStack's init hook ``localstack/init/ready.d/10-bucket.py`` and the
  moto-server compose service run :func:`main` inside LocalStack's or moto's
  own Python, so this module imports nothing of whatschat and only boto3;
- the tests run that same hook against moto's server.

Object layout (docs/files.md): clients upload to ``incoming/...``; a
completed upload is copied to ``files/...``. The lifecycle rule expires
``incoming/`` objects, so completed files never expire.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

INCOMING_PREFIX = "incoming/"  # presigned uploads land here; expires
FILES_PREFIX = "files/"  # completed, recorded attachments; kept
INCOMING_EXPIRY_DAYS = 1  # lifecycle granularity is days; the sweeper is faster
MULTIPART_ABORT_DAYS = 1


def cors_rules(origins: list[str]) -> list[dict[str, Any]]:
    """Browsers on ``origins`` may POST uploads and GET downloads."""
    return [
        {
            "ID": "whatschat-browser-uploads",
            "AllowedOrigins": origins,
            "AllowedMethods": ["POST", "GET", "HEAD"],
            "AllowedHeaders": ["*"],
            "ExposeHeaders": ["ETag", "Location"],
            "MaxAgeSeconds": 3600,
        }
    ]


def lifecycle_rules() -> list[dict[str, Any]]:
    """Expire never-completed uploads; abort abandoned multipart uploads."""
    return [
        {
            "ID": "whatschat-expire-incoming",
            "Filter": {"Prefix": INCOMING_PREFIX},
            "Status": "Enabled",
            "Expiration": {"Days": INCOMING_EXPIRY_DAYS},
        },
        {
            "ID": "whatschat-abort-multipart",
            "Filter": {"Prefix": ""},
            "Status": "Enabled",
            "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": MULTIPART_ABORT_DAYS},
        },
    ]


def _error_code(exc: Exception) -> str:
    response = getattr(exc, "response", {}) or {}
    return str(response.get("Error", {}).get("Code", ""))


def apply(s3: S3Client, bucket: str, cors_origins: list[str], region: str = "") -> dict[str, str]:
    """Create ``bucket`` if missing and (re)apply CORS and lifecycle; idempotent.

    Returns what was done per step. A store that does not implement lifecycle
    rules is reported, not fatal: the orphan sweeper still cleans up.
    """
    done: dict[str, str] = {}
    try:
        s3.head_bucket(Bucket=bucket)
        done["bucket"] = "exists"
    except s3.exceptions.ClientError as exc:
        if _error_code(exc) not in ("404", "NoSuchBucket", "NotFound"):
            raise
        if region and region != "us-east-1":
            s3.create_bucket(
                Bucket=bucket,
                CreateBucketConfiguration={"LocationConstraint": region},  # type: ignore[typeddict-item]
            )
        else:
            s3.create_bucket(Bucket=bucket)
        done["bucket"] = "created"
    if cors_origins:
        s3.put_bucket_cors(
            Bucket=bucket,
            CORSConfiguration={"CORSRules": cors_rules(cors_origins)},  # type: ignore[typeddict-item]
        )
        done["cors"] = ", ".join(cors_origins)
    else:
        done["cors"] = "none (no origins configured)"
    try:
        s3.put_bucket_lifecycle_configuration(
            Bucket=bucket,
            LifecycleConfiguration={"Rules": lifecycle_rules()},  # type: ignore[typeddict-item]
        )
        done["lifecycle"] = f"{INCOMING_PREFIX} expires after {INCOMING_EXPIRY_DAYS} day(s)"
    except s3.exceptions.ClientError as exc:
        if _error_code(exc) not in ("NotImplemented", "501"):
            raise
        done["lifecycle"] = "not supported by this store; the orphan sweeper cleans up"
    return done


def main(argv: list[str] | None = None) -> int:
    """Command line for init hooks: connect with the given settings and apply."""
    import boto3
    from botocore.config import Config

    parser = argparse.ArgumentParser(prog="bucket_setup", description=__doc__)
    parser.add_argument("--endpoint", required=True, help="S3 endpoint URL")
    parser.add_argument("--bucket", required=True)
    parser.add_argument("--region", default="us-east-1")
    parser.add_argument("--access-key-id", default="test")
    parser.add_argument("--secret-access-key", default="test")
    parser.add_argument(
        "--cors-origins", default="", help="comma-separated web origins allowed to upload"
    )
    args = parser.parse_args(argv)
    s3 = boto3.client(
        "s3",
        endpoint_url=args.endpoint,
        region_name=args.region,
        aws_access_key_id=args.access_key_id,
        aws_secret_access_key=args.secret_access_key,
        config=Config(s3={"addressing_style": "path"}),
    )
    origins = [o.strip() for o in args.cors_origins.split(",") if o.strip()]
    done = apply(s3, args.bucket, origins, args.region)
    print(json.dumps({"name": args.bucket, **done}), file=sys.stdout, flush=True)
    return 0
