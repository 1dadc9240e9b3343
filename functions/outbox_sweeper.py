"""The outbox sweeper: publishes events a function committed but never published.

A CloudEvent function fired by a Knative PingSource (``make dev`` fires it
every 2 s). Safe to run many at once (rows are claimed with SKIP LOCKED).
See docs/messaging.md (outbox and sweeper).
"""

from __future__ import annotations

import logging

import functions_framework
from cloudevents.http import CloudEvent

from whatschat import outbox

logger = logging.getLogger(__name__)


@functions_framework.cloud_event
def outbox_sweeper(event: CloudEvent) -> None:
    report = outbox.sweep()
    if report.published or report.deleted or report.redis_down:
        logger.info(
            "outbox sweep %s: published %d, deleted %d%s",
            event["id"],
            report.published,
            report.deleted,
            ", Redis down" if report.redis_down else "",
        )
