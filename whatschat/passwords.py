"""Password hashing with argon2id, and verification that does not reveal unknown users.

Parameters come from settings (``ARGON2_TIME_COST``, ``ARGON2_MEMORY_KIB``,
``ARGON2_PARALLELISM``); docs/auth.md states the defaults and why. A login
for a username that does not exist still runs one full argon2 verification,
against a dummy hash made with the current parameters, so an unknown user and
a wrong password cost the same time as well as getting the same answer.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import unicodedata
from functools import lru_cache

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError

from whatschat.config import get_settings

logger = logging.getLogger(__name__)

# Bounds checked before hashing (argon2 over a huge input is a cheap DoS).
MIN_LENGTH = 8
MAX_LENGTH = 256


@lru_cache(maxsize=4)
def _hasher(time_cost: int, memory_kib: int, parallelism: int) -> PasswordHasher:
    return PasswordHasher(
        time_cost=time_cost,
        memory_cost=memory_kib,
        parallelism=parallelism,
        hash_len=32,
        salt_len=16,
        type=Type.ID,
    )


def hasher() -> PasswordHasher:
    """The argon2id hasher for the configured parameters."""
    s = get_settings()
    return _hasher(s.argon2_time_cost, s.argon2_memory_kib, s.argon2_parallelism)


_dummy_lock = threading.Lock()  # one computation, however many callers race for it


def _dummy_hash(ph: PasswordHasher) -> str:
    with _dummy_lock:
        return _dummy_hash_once(ph)


@lru_cache(maxsize=4)
def _dummy_hash_once(ph: PasswordHasher) -> str:
    return ph.hash("no user has this password; it only makes unknown users cost the same")


def _normalize(password: str) -> bytes:
    # The same password typed on two keyboards may arrive as different code
    # points (composed or decomposed accents); NFKC makes them one.
    return unicodedata.normalize("NFKC", password).encode()


def hash_password(password: str) -> str:
    """The argon2id hash (PHC string, parameters and salt inside) to store."""
    return hasher().hash(_normalize(password))


def verify(stored_hash: str | None, password: str) -> bool:
    """Whether ``password`` matches ``stored_hash``.

    ``stored_hash=None`` (no such user) verifies against the dummy hash and
    returns False, taking as long as a real verification.
    """
    ph = hasher()
    candidate = _normalize(password)
    if stored_hash is None:
        with contextlib.suppress(VerificationError):
            ph.verify(_dummy_hash(ph), candidate)
        return False
    try:
        return ph.verify(stored_hash, candidate)
    except VerificationError:
        return False
    except InvalidHashError:
        # A stored value that is not an argon2 hash (e.g. an account created
        # by an import) can never be logged into, but must not be a 500.
        logger.warning("stored password hash is not a valid argon2 hash")
        return False


def needs_rehash(stored_hash: str) -> bool:
    """Whether the hash was made with other parameters than the configured ones."""
    try:
        return hasher().check_needs_rehash(stored_hash)
    except InvalidHashError:
        return False


_warm_up_asked = False  # warm_up() was called in this process


def warm_up() -> None:
    """Start computing the dummy hash at function load, in the background.

    The server starts listening meanwhile (argon2 releases the GIL), so the
    pod is ready sooner; a request for an unknown user that arrives first
    waits for the same computation instead of starting a second one.
    """
    global _warm_up_asked
    _warm_up_asked = True
    _start_warm_up(hasher())


def _start_warm_up(ph: PasswordHasher) -> None:
    threading.Thread(target=_dummy_hash, args=(ph,), name="argon2-warm-up", daemon=True).start()


def _after_fork_in_child() -> None:
    """A server that loads the function and then forks its workers (ours,
    whatschat.http_server, does; so does functions-framework's gunicorn) may
    fork while the warm-up thread holds the lock. The child has the lock but
    not the thread: every login for an unknown user would wait forever. Give
    the child a fresh lock and its own warm-up (a cache hit when the parent
    had finished)."""
    global _dummy_lock
    _dummy_lock = threading.Lock()
    if _warm_up_asked:
        _start_warm_up(hasher())


os.register_at_fork(after_in_child=_after_fork_in_child)
