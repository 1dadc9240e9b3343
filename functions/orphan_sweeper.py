"""Internal: delete uploads never completed and files no attachment records.

A CloudEvent function fired by a Knative PingSource (every minute by the
local stack). The event's data may narrow the sweep: ``{"scopes":
["incoming"]}`` for the frequent cheap sweep, ``["files"]`` for the full
listing of completed files. See docs/files.md (orphans).
"""

from __future__ import annotations

import logging
from typing import Any

import functions_framework

from whatschat import files
from whatschat.problems import DependencyUnavailable

logger = logging.getLogger("whatschat.orphan_sweeper")

SCOPES = ("incoming", "files")


def _scopes(data: Any) -> tuple[str, ...]:
    wanted = data.get("scopes") if isinstance(data, dict) else None
    if not isinstance(wanted, list):
        return SCOPES
    return tuple(scope for scope in SCOPES if scope in wanted)


@functions_framework.cloud_event
def orphan_sweeper(event: Any) -> None:
    try:
        report = files.sweep_orphans(scopes=_scopes(event.data))
    except DependencyUnavailable as exc:
        # The next tick sweeps again; nothing is lost by skipping one.
        logger.warning("orphan sweep skipped: %s unavailable: %s", exc.dependency, exc)
        return
    if report.incoming_deleted or report.files_deleted:
        logger.info(
            "orphan sweep deleted %d upload(s), %d file(s) (%d checked)",
            report.incoming_deleted,
            report.files_deleted,
            report.files_checked,
        )
