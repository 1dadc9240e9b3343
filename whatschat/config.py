"""Every setting of the system, read from the environment in one place.

No other module reads ``os.environ``: they call :func:`get_settings`. The
names and defaults are listed in README.md (Configuration) and
docs/configuration.md; keep the three in step.
"""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Settings of functions, the gateway and the local stack."""

    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore")

    # Infrastructure. Empty means "not configured": `whatschat dev` then starts
    # an embedded server and fills the value in for its children.
    database_url: str = Field("", validation_alias="DATABASE_URL")
    database_replica_url: str = Field("", validation_alias="DATABASE_REPLICA_URL")
    redis_url: str = Field("", validation_alias="REDIS_URL")
    s3_endpoint_url: str = Field("", validation_alias="S3_ENDPOINT_URL")
    # Address clients use to reach S3 (presigned URLs); defaults to the endpoint.
    s3_public_endpoint_url: str = Field("", validation_alias="S3_PUBLIC_ENDPOINT_URL")
    s3_bucket: str = Field("whatschat-files", validation_alias="S3_BUCKET")
    s3_region: str = Field("us-east-1", validation_alias="S3_REGION")
    s3_access_key_id: str = Field("", validation_alias="S3_ACCESS_KEY_ID")
    s3_secret_access_key: str = Field("", validation_alias="S3_SECRET_ACCESS_KEY")

    # Token keys. The signing key (Ed25519 private key, PEM) is needed only by
    # the functions that issue tokens; everything else verifies with the
    # public keys, a JSON object {"kid": "PEM", ...} so keys can rotate.
    token_signing_key: str = Field("", validation_alias="TOKEN_SIGNING_KEY")
    token_signing_key_id: str = Field("", validation_alias="TOKEN_SIGNING_KEY_ID")
    token_verify_keys: str = Field("", validation_alias="TOKEN_VERIFY_KEYS")
    token_issuer: str = Field("whatschat", validation_alias="TOKEN_ISSUER")
    access_token_ttl_seconds: int = Field(900, ge=30, validation_alias="ACCESS_TOKEN_TTL_SECONDS")
    refresh_token_ttl_seconds: int = Field(
        30 * 24 * 3600, ge=300, validation_alias="REFRESH_TOKEN_TTL_SECONDS"
    )

    # Password hashing (argon2id). Defaults are RFC 9106's low-memory profile;
    # docs/auth.md says why. Stored hashes are upgraded at the next login when
    # these change.
    argon2_time_cost: int = Field(3, ge=1, validation_alias="ARGON2_TIME_COST")
    argon2_memory_kib: int = Field(64 * 1024, ge=8, validation_alias="ARGON2_MEMORY_KIB")
    argon2_parallelism: int = Field(4, ge=1, validation_alias="ARGON2_PARALLELISM")

    # Throttling of failed logins (per username and per client address) and of
    # registrations (per client address, per hour). See docs/auth.md.
    login_throttle_window_seconds: int = Field(
        900, ge=1, validation_alias="LOGIN_THROTTLE_WINDOW_SECONDS"
    )
    login_max_failures_per_username: int = Field(
        10, ge=1, validation_alias="LOGIN_MAX_FAILURES_PER_USERNAME"
    )
    login_max_failures_per_address: int = Field(
        100, ge=1, validation_alias="LOGIN_MAX_FAILURES_PER_ADDRESS"
    )
    registrations_per_address_per_hour: int = Field(
        20, ge=1, validation_alias="REGISTRATIONS_PER_ADDRESS_PER_HOUR"
    )

    # Limits.
    max_request_bytes: int = Field(64 * 1024, ge=1024, validation_alias="MAX_REQUEST_BYTES")
    max_message_chars: int = Field(4000, ge=1, validation_alias="MAX_MESSAGE_CHARS")
    max_group_members: int = Field(5000, ge=2, validation_alias="MAX_GROUP_MEMBERS")
    max_page_size: int = Field(200, ge=1, validation_alias="MAX_PAGE_SIZE")
    max_upload_bytes: int = Field(25 * 1024 * 1024, ge=1, validation_alias="MAX_UPLOAD_BYTES")

    # Messaging (docs/messaging.md). Sends per user per window; fails open
    # without Redis because a send must succeed while Redis is down.
    send_rate_limit: int = Field(30, ge=1, validation_alias="SEND_RATE_LIMIT")
    send_rate_window_seconds: int = Field(10, ge=1, validation_alias="SEND_RATE_WINDOW_SECONDS")
    # Missed messages per conversation in one sync answer; beyond it the
    # client pages with GET /v1/history.
    sync_messages_per_conversation: int = Field(
        100, ge=1, validation_alias="SYNC_MESSAGES_PER_CONVERSATION"
    )
    # The sweeper republishes outbox rows older than this (younger ones are
    # still being published by the function that wrote them) and deletes
    # published rows older than the retention.
    outbox_sweep_min_age_seconds: float = Field(
        5.0, ge=0, validation_alias="OUTBOX_SWEEP_MIN_AGE_SECONDS"
    )
    outbox_retention_seconds: int = Field(86400, ge=0, validation_alias="OUTBOX_RETENTION_SECONDS")
    # After the replica failed, reads go straight to the primary this long.
    replica_retry_seconds: float = Field(5.0, ge=0, validation_alias="REPLICA_RETRY_SECONDS")

    # Files (docs/files.md). Allowed types: a comma-separated subset of the
    # types whose first bytes whatschat/file_types.py can check.
    upload_content_types: str = Field(
        "image/jpeg,image/png,image/gif,image/webp,application/pdf,text/plain",
        validation_alias="UPLOAD_CONTENT_TYPES",
    )
    upload_url_ttl_seconds: int = Field(
        600, ge=10, le=7 * 24 * 3600, validation_alias="UPLOAD_URL_TTL_SECONDS"
    )
    download_url_ttl_seconds: int = Field(
        300, ge=10, le=7 * 24 * 3600, validation_alias="DOWNLOAD_URL_TTL_SECONDS"
    )
    # An upload not completed within this long is an orphan the sweeper removes.
    orphan_grace_seconds: int = Field(3600, ge=0, validation_alias="ORPHAN_GRACE_SECONDS")
    # Web origins allowed to upload from a browser (the bucket's CORS rule).
    s3_cors_origins: str = Field(
        "http://127.0.0.1:8080,http://localhost:8080", validation_alias="S3_CORS_ORIGINS"
    )

    # How long a caller waits for a database connection before getting a 503.
    database_connect_timeout_seconds: float = Field(
        3.0, gt=0, validation_alias="DATABASE_CONNECT_TIMEOUT_SECONDS"
    )
    database_pool_max_size: int = Field(4, ge=1, validation_alias="DATABASE_POOL_MAX_SIZE")
    redis_timeout_seconds: float = Field(1.0, gt=0, validation_alias="REDIS_TIMEOUT_SECONDS")
    s3_timeout_seconds: float = Field(3.0, gt=0, validation_alias="S3_TIMEOUT_SECONDS")

    # Local stack (`whatschat dev`).
    data_dir: str = Field(".whatschat", validation_alias="WHATSCHAT_DATA_DIR")
    api_host: str = Field("127.0.0.1", validation_alias="WHATSCHAT_API_HOST")
    api_port: int = Field(8080, ge=0, le=65535, validation_alias="WHATSCHAT_API_PORT")

    # Gateway.
    gateway_host: str = Field("127.0.0.1", validation_alias="GATEWAY_HOST")
    gateway_port: int = Field(8081, ge=0, le=65535, validation_alias="GATEWAY_PORT")
    gateway_http_port: int = Field(8082, ge=0, le=65535, validation_alias="GATEWAY_HTTP_PORT")
    # Gateway limits and timers (docs/gateway.md, "Limits").
    gateway_instance_id: str = Field("", validation_alias="GATEWAY_INSTANCE_ID")  # "" = random
    gateway_auth_timeout_seconds: float = Field(
        5.0, gt=0, validation_alias="GATEWAY_AUTH_TIMEOUT_SECONDS"
    )
    gateway_max_frame_bytes: int = Field(
        64 * 1024, ge=1024, validation_alias="GATEWAY_MAX_FRAME_BYTES"
    )
    gateway_max_connections_per_user: int = Field(
        10, ge=1, validation_alias="GATEWAY_MAX_CONNECTIONS_PER_USER"
    )
    gateway_ping_interval_seconds: float = Field(
        20.0, gt=0, validation_alias="GATEWAY_PING_INTERVAL_SECONDS"
    )
    gateway_ping_timeout_seconds: float = Field(
        20.0, gt=0, validation_alias="GATEWAY_PING_TIMEOUT_SECONDS"
    )
    # Bytes queued for one socket beyond which it is cut off as a slow consumer.
    gateway_send_buffer_bytes: int = Field(
        1024 * 1024, ge=4096, validation_alias="GATEWAY_SEND_BUFFER_BYTES"
    )
    # Missed messages per conversation replayed on resume; beyond it the
    # client is told to catch up through GET /v1/history.
    gateway_replay_max_messages: int = Field(
        500, ge=1, validation_alias="GATEWAY_REPLAY_MAX_MESSAGES"
    )
    # Live events held per socket while it replays; beyond it, resume again.
    gateway_held_events_max: int = Field(10000, ge=10, validation_alias="GATEWAY_HELD_EVENTS_MAX")
    # How long an out-of-order event waits for the seq before it to arrive
    # before the gap is filled from PostgreSQL.
    gateway_gap_wait_seconds: float = Field(0.25, ge=0, validation_alias="GATEWAY_GAP_WAIT_SECONDS")
    gateway_resync_concurrency: int = Field(8, ge=1, validation_alias="GATEWAY_RESYNC_CONCURRENCY")
    # SIGTERM: sockets are closed (1012) over this long, then the process exits.
    gateway_drain_seconds: float = Field(10.0, ge=0, validation_alias="GATEWAY_DRAIN_SECONDS")
    gateway_presence_ttl_seconds: float = Field(
        45.0, ge=3, validation_alias="GATEWAY_PRESENCE_TTL_SECONDS"
    )
    gateway_typing_interval_seconds: float = Field(
        1.0, ge=0, validation_alias="GATEWAY_TYPING_INTERVAL_SECONDS"
    )
    # Liveness check of the Pub/Sub connection (PING) and its reconnect delay.
    gateway_pubsub_ping_seconds: float = Field(
        5.0, gt=0, validation_alias="GATEWAY_PUBSUB_PING_SECONDS"
    )

    # Every authenticated function: requests per user per window (429 beyond;
    # not enforced while Redis is down). Send has its own, stricter limit.
    api_rate_limit: int = Field(300, ge=1, validation_alias="API_RATE_LIMIT")
    api_rate_window_seconds: int = Field(60, ge=1, validation_alias="API_RATE_WINDOW_SECONDS")

    # How many proxies in front of the functions append to X-Forwarded-For
    # (0: use the TCP peer). See whatschat.api.Call.client_address.
    trusted_proxy_hops: int = Field(0, ge=0, le=10, validation_alias="TRUSTED_PROXY_HOPS")

    log_level: str = Field("INFO", validation_alias="LOG_LEVEL")


def child_environment(overrides: dict[str, str]) -> dict[str, str]:
    """This process's environment plus ``overrides``: what the local stack hands its children."""
    import os

    return {**os.environ, **overrides}


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read once. Tests call ``get_settings.cache_clear()``."""
    return Settings()
