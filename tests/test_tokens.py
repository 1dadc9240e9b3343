"""Access token verification, including the per-process cache of verified tokens."""

from __future__ import annotations

import json
import time

import pytest

from tests.conftest import Stack
from whatschat import tokens
from whatschat.config import get_settings


def test_a_remembered_token_still_expires(stack: Stack) -> None:
    token, ttl = tokens.issue_access_token(1, "ann")
    assert tokens.verify_access_token(token).user_id == 1
    later = time.time() + ttl + tokens.LEEWAY_SECONDS + 1
    with pytest.raises(tokens.InvalidToken, match="expired"):
        tokens.verify_access_token(token, now=later)


def test_removing_a_key_rejects_tokens_already_verified(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    token, _ = tokens.issue_access_token(2, "bob")
    assert tokens.verify_access_token(token).username == "bob"
    other = tokens.generate_key_pair("other-key")
    monkeypatch.setenv("TOKEN_VERIFY_KEYS", json.dumps({other.key_id: other.public_pem}))
    get_settings.cache_clear()
    try:
        with pytest.raises(tokens.InvalidToken, match="unknown key"):
            tokens.verify_access_token(token)
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()


def test_a_tampered_token_is_refused_even_after_the_original_was_verified(stack: Stack) -> None:
    token, _ = tokens.issue_access_token(3, "cy")
    tokens.verify_access_token(token)
    header, payload, signature = token.split(".")
    flipped = signature[:-2] + ("AA" if signature[-2:] != "AA" else "BB")
    with pytest.raises(tokens.InvalidToken):
        tokens.verify_access_token(f"{header}.{payload}.{flipped}")
