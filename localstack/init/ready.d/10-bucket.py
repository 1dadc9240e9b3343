"""Ready hook: create the WhatsChat files bucket with its CORS and lifecycle rules.

LocalStack runs this file inside its own Python when S3 is ready (files in
/etc/localstack/init/ready.d ending in .py are exec'd there); the moto
compose service and the tests run it as a plain script. Either way it calls
the one implementation, whatschat/storage/bucket_setup.py, mounted at
$WHATSCHAT_SOURCE (default /opt/whatschat). Settings come from the
environment: WHATSCHAT_S3_ENDPOINT_URL, WHATSCHAT_S3_BUCKET,
WHATSCHAT_S3_REGION, WHATSCHAT_S3_CORS_ORIGINS. See localstack/README.md.

LocalStack executes it with empty globals: no __name__ or __file__ here, and
no SystemExit (it would escape LocalStack's error handling).
"""

import os
import sys

sys.path.insert(0, os.environ.get("WHATSCHAT_SOURCE", "/opt/whatschat"))

from whatschat.storage import bucket_setup

bucket_setup.main(
    [
        "--endpoint",
        os.environ.get("WHATSCHAT_S3_ENDPOINT_URL", "http://localhost:4566"),
        "--bucket",
        os.environ.get("WHATSCHAT_S3_BUCKET", "whatschat-files"),
        "--region",
        os.environ.get("WHATSCHAT_S3_REGION", "us-east-1"),
        "--access-key-id",
        os.environ.get("WHATSCHAT_S3_ACCESS_KEY_ID", "test"),
        "--secret-access-key",
        os.environ.get("WHATSCHAT_S3_SECRET_ACCESS_KEY", "test"),
        "--cors-origins",
        os.environ.get("WHATSCHAT_S3_CORS_ORIGINS", "http://127.0.0.1:8080,http://localhost:8080"),
    ]
)
