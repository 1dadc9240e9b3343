"""Access tokens: JWTs signed with Ed25519 (EdDSA), carrying ``kid`` so keys rotate.

Issuers hold the private key (``TOKEN_SIGNING_KEY``); everything else verifies
with the public keys only (``TOKEN_VERIFY_KEYS``, a JSON object kid -> PEM).
See docs/auth.md.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from functools import lru_cache

import jwt
import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from whatschat.config import get_settings

ALGORITHM = "EdDSA"
# Tolerated clock difference between issuer and verifier, in seconds.
LEEWAY_SECONDS = 5


class InvalidToken(Exception):
    """The token is malformed, tampered, expired, or signed by an unknown key."""


@dataclass(frozen=True)
class AccessClaims:
    """What a verified access token says."""

    user_id: int
    username: str
    expires_at: int  # Unix seconds
    token_id: str


@dataclass(frozen=True)
class KeyPair:
    """A freshly generated signing key, as the PEM strings configuration takes."""

    key_id: str
    private_pem: str
    public_pem: str

    def settings(self) -> dict[str, str]:
        """The settings that sign with this key and accept it (TOKEN_SIGNING_KEY_ID,
        TOKEN_SIGNING_KEY, TOKEN_VERIFY_KEYS), as environment values."""
        return {
            "TOKEN_SIGNING_KEY_ID": self.key_id,
            "TOKEN_SIGNING_KEY": self.private_pem,
            "TOKEN_VERIFY_KEYS": orjson.dumps({self.key_id: self.public_pem}).decode(),
        }


def generate_key_pair(key_id: str | None = None) -> KeyPair:
    """A new Ed25519 key pair (``whatschat keys`` and the local stack use it)."""
    private = Ed25519PrivateKey.generate()
    private_pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    public_pem = (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return KeyPair(key_id or uuid.uuid4().hex[:12], private_pem, public_pem)


@lru_cache(maxsize=8)
def _verify_keys(raw: str) -> dict[str, Ed25519PublicKey]:
    keys: dict[str, Ed25519PublicKey] = {}
    if not raw:
        return keys
    for kid, pem in orjson.loads(raw).items():
        key = serialization.load_pem_public_key(pem.encode())
        if not isinstance(key, Ed25519PublicKey):
            raise ValueError(f"verify key {kid!r} is not an Ed25519 public key")
        keys[kid] = key
    return keys


@lru_cache(maxsize=4)
def _signing_key(pem: str) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(pem.encode(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError("TOKEN_SIGNING_KEY is not an Ed25519 private key")
    return key


def issue_access_token(user_id: int, username: str, *, now: float | None = None) -> tuple[str, int]:
    """Sign an access token; return it and its lifetime in seconds."""
    settings = get_settings()
    if not settings.token_signing_key or not settings.token_signing_key_id:
        raise RuntimeError("TOKEN_SIGNING_KEY and TOKEN_SIGNING_KEY_ID must be set to issue tokens")
    issued = int(now if now is not None else time.time())
    ttl = settings.access_token_ttl_seconds
    claims = {
        "sub": str(user_id),
        "name": username,
        "iss": settings.token_issuer,
        "iat": issued,
        "exp": issued + ttl,
        "jti": uuid.uuid4().hex,
    }
    token = jwt.encode(
        claims,
        _signing_key(settings.token_signing_key),
        algorithm=ALGORITHM,
        headers={"kid": settings.token_signing_key_id},
    )
    return token, ttl


def verify_access_token(token: str, *, now: float | None = None) -> AccessClaims:
    """Check signature, key id, issuer and expiry; raise :class:`InvalidToken` otherwise.

    A client sends the same token with every request for up to its lifetime, so
    a verified token's claims are remembered (bounded, per process, keyed by the
    token and the configured keys: removing a key forgets its tokens); the
    expiry is checked again on every call.
    """
    settings = get_settings()
    claims = _verified(token, settings.token_verify_keys, settings.token_issuer)
    if claims.expires_at + LEEWAY_SECONDS < (now if now is not None else time.time()):
        raise InvalidToken("Signature has expired")
    return claims


@lru_cache(maxsize=4096)
def _verified(token: str, verify_keys: str, issuer: str) -> AccessClaims:
    """Verify once; failures raise and are not remembered."""
    try:
        header = jwt.get_unverified_header(token)
        key = _verify_keys(verify_keys).get(str(header.get("kid", "")))
        if key is None or header.get("alg") != ALGORITHM:
            raise InvalidToken("token signed by an unknown key")
        claims = jwt.decode(
            token,
            key,
            algorithms=[ALGORITHM],
            issuer=issuer,
            leeway=LEEWAY_SECONDS,
            options={"require": ["exp", "iat", "sub", "iss"]},
        )
        return AccessClaims(
            user_id=int(claims["sub"]),
            username=str(claims.get("name", "")),
            expires_at=int(claims["exp"]),
            token_id=str(claims.get("jti", "")),
        )
    except InvalidToken:
        raise
    except (jwt.PyJWTError, ValueError, TypeError, KeyError) as exc:
        raise InvalidToken(str(exc)) from exc
