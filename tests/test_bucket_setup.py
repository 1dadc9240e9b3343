"""The bucket's setup against moto's server: LocalStack's ready hook
(localstack/init/ready.d/10-bucket.py, run the way LocalStack runs it),
`whatschat setup-bucket` and objects.ensure_bucket all apply the same CORS and
lifecycle rules, idempotently, and the CORS rule really admits a browser upload."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from typing import Any

import pytest
import requests

from tests.conftest import ROOT, Stack
from whatschat import cli
from whatschat.config import get_settings
from whatschat.storage import bucket_setup, objects

HOOK = ROOT / "localstack" / "init" / "ready.d" / "10-bucket.py"
ORIGINS = "http://127.0.0.1:8080,http://localhost:8080"


def assert_configured(bucket: str, origins: list[str]) -> None:
    s3 = objects.client()
    cors = s3.get_bucket_cors(Bucket=bucket)["CORSRules"]
    assert len(cors) == 1
    assert sorted(cors[0]["AllowedOrigins"]) == sorted(origins)
    assert set(cors[0]["AllowedMethods"]) == {"POST", "GET", "HEAD"}
    rules = {
        rule["ID"]: rule for rule in s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    }
    expire = rules["whatschat-expire-incoming"]
    assert expire["Status"] == "Enabled"
    assert expire["Filter"] == {"Prefix": "incoming/"}
    assert expire["Expiration"] == {"Days": 1}
    # Completed files are never expired by a rule.
    assert all("Expiration" not in r for r in rules.values() if r["ID"] != expire["ID"])
    assert rules["whatschat-abort-multipart"]["AbortIncompleteMultipartUpload"] == {
        "DaysAfterInitiation": 1
    }


def run_hook(stack: Stack, bucket: str) -> subprocess.CompletedProcess[str]:
    """Run the hook as LocalStack's PythonScriptRunner does: exec with empty globals."""
    env = {
        **os.environ,
        "WHATSCHAT_SOURCE": str(ROOT),
        "WHATSCHAT_S3_ENDPOINT_URL": stack.s3_url,
        "WHATSCHAT_S3_BUCKET": bucket,
        "WHATSCHAT_S3_CORS_ORIGINS": ORIGINS,
    }
    runner = "import sys; exec(open(sys.argv[1], 'rb').read(), {})"
    return subprocess.run(
        [sys.executable, "-c", runner, str(HOOK)],
        env=env,
        cwd=stack.tmp,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_localstack_ready_hook_creates_and_configures_the_bucket(stack: Stack) -> None:
    bucket = f"hook-{uuid.uuid4().hex[:12]}"
    first = run_hook(stack, bucket)
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout) == {
        "name": bucket,
        "bucket": "created",
        "cors": ", ".join(ORIGINS.split(",")),
        "lifecycle": "incoming/ expires after 1 day(s)",
    }
    assert_configured(bucket, ORIGINS.split(","))
    # LocalStack runs ready hooks on every start: a second run changes nothing.
    second = run_hook(stack, bucket)
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout)["bucket"] == "exists"
    assert_configured(bucket, ORIGINS.split(","))


def test_the_hook_fails_loudly_when_s3_is_unreachable(stack: Stack, tmp_path: Any) -> None:
    from whatschat.embedded import free_port

    env_stack = Stack(**{**stack.__dict__, "s3_url": f"http://127.0.0.1:{free_port()}"})
    result = run_hook(env_stack, "never-created")
    assert result.returncode != 0


def test_cli_setup_bucket_applies_the_same_rules(
    stack: Stack, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    bucket = f"cli-{uuid.uuid4().hex[:12]}"
    monkeypatch.setenv("S3_BUCKET", bucket)
    monkeypatch.setenv("S3_CORS_ORIGINS", "http://127.0.0.1:9999")
    get_settings.cache_clear()
    try:
        assert cli.main(["setup-bucket"]) == 0
        printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert printed["name"] == bucket
        assert printed["bucket"] == "created"
        assert_configured(bucket, ["http://127.0.0.1:9999"])
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()


def test_the_test_stack_bucket_is_set_up_like_production(stack: Stack) -> None:
    # conftest's `stack` calls objects.ensure_bucket, as `make dev` does.
    assert_configured(get_settings().s3_bucket, objects.cors_origins())


def test_cors_admits_a_browser_upload_from_the_web_client(stack: Stack) -> None:
    """The preflight a browser sends before a cross-origin POST to the bucket."""
    url = f"{stack.s3_url}/{get_settings().s3_bucket}"
    allowed = requests.options(
        url,
        headers={
            "Origin": "http://127.0.0.1:8080",
            "Access-Control-Request-Method": "POST",
        },
        timeout=10,
    )
    assert allowed.status_code == 200
    assert allowed.headers.get("Access-Control-Allow-Origin") in ("http://127.0.0.1:8080", "*")
    assert "POST" in allowed.headers.get("Access-Control-Allow-Methods", "")
    refused = requests.options(
        url,
        headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"},
        timeout=10,
    )
    assert refused.status_code == 403  # the origin matches no rule


def test_lifecycle_rules_only_expire_the_upload_prefix() -> None:
    expiring = [r for r in bucket_setup.lifecycle_rules() if "Expiration" in r]
    assert [r["Filter"]["Prefix"] for r in expiring] == [bucket_setup.INCOMING_PREFIX]
    assert not bucket_setup.FILES_PREFIX.startswith(bucket_setup.INCOMING_PREFIX)
