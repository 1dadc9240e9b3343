"""Field types of the chat API's request models.

Every id and seq a client sends must fit PostgreSQL's ``bigint`` and every
text must be storable (PostgreSQL text cannot hold NUL): checked here, so a
wild value is a 422 at the door and never a database error. See
docs/messaging.md.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Field, StringConstraints

BIGINT_MAX = 2**63 - 1


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


Id = Annotated[int, Field(ge=1, le=BIGINT_MAX)]
"""A user or conversation id."""

Seq = Annotated[int, Field(ge=0, le=BIGINT_MAX)]
"""A per-conversation sequence number (0: before the first message)."""

Text = Annotated[str, AfterValidator(_no_nul)]
"""Free text; length limits are checked by the operation (they are settings)."""

ClientMsgId = Annotated[
    str, StringConstraints(min_length=1, max_length=64), AfterValidator(_no_nul)
]
"""The sender's id for a send, unique per sender: a retry reuses it."""

Title = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=100),
    AfterValidator(_no_nul),
]
"""A group's title."""

Description = Annotated[str, StringConstraints(max_length=500), AfterValidator(_no_nul)]
"""A group's description ("" removes it)."""

Username = Annotated[str, StringConstraints(min_length=1, max_length=64), AfterValidator(_no_nul)]
"""A username to look up (case-insensitive)."""
