"""Fixtures of the messaging tests (helpers in tests/messaging_helpers.py).

A test module uses them with ``pytest_plugins = ["tests.messaging_fixtures"]``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.conftest import Stack
from tests.messaging_helpers import Chat, EventSink


@pytest.fixture
def chat(function_client: Callable[[str], Any], clean_db: Any) -> Chat:
    """A Chat client over an empty database."""
    return Chat(function_client)


@pytest.fixture
def events_seen(stack: Stack, clean_db: Any) -> Iterator[EventSink]:
    """Every event published while the test runs."""
    sink = EventSink(stack.redis_url)
    yield sink
    sink.close()
