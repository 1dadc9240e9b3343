"""Which ingress paths reach which function target: the one routing table.

The production ingress (knative/, Gateway API HTTPRoute) and the local stack
(``functions/local_ingress.py``) are both built from this table, and a test
checks that every target here has a module in functions/ and a Knative
Service, and the reverse. Paths are matched like Gateway API matches them:
``exact`` paths whole, ``prefixes`` by path segments (``/v1/users/`` matches
``/v1/users/alice``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class FunctionRoute:
    """One function target and what reaches it."""

    target: str  # module in functions/, function name in it, Knative Service name
    exact: tuple[str, ...] = ()  # paths matched whole
    prefixes: tuple[str, ...] = ()  # path prefixes, each ending in "/"
    signature: Literal["http", "cloudevent"] = "http"
    public: bool = True  # False: cluster-local only (triggered inside the cluster)


ROUTES: tuple[FunctionRoute, ...] = (
    FunctionRoute("healthz", exact=("/healthz",)),
    # accounts and auth
    FunctionRoute("register", exact=("/v1/auth/register",)),
    FunctionRoute("login", exact=("/v1/auth/login",)),
    FunctionRoute("refresh", exact=("/v1/auth/refresh",)),
    FunctionRoute("logout", exact=("/v1/auth/logout",)),
    FunctionRoute("me", exact=("/v1/me",)),
    FunctionRoute("users", prefixes=("/v1/users/",)),
    # conversations and messages
    FunctionRoute("conversations", exact=("/v1/conversations",), prefixes=("/v1/conversations/",)),
    FunctionRoute("send", exact=("/v1/messages",)),
    FunctionRoute("messages", prefixes=("/v1/messages/",)),
    FunctionRoute("history", prefixes=("/v1/history/",)),
    FunctionRoute("sync", exact=("/v1/sync",)),
    FunctionRoute("receipts", exact=("/v1/receipts",)),
    FunctionRoute("group_create", exact=("/v1/groups",)),
    FunctionRoute("groups", prefixes=("/v1/groups/",)),
    # files
    FunctionRoute("uploads", exact=("/v1/uploads",), prefixes=("/v1/uploads/",)),
    FunctionRoute("downloads", prefixes=("/v1/attachments/",)),
    # internal, triggered by Knative PingSources
    FunctionRoute("outbox_sweeper", signature="cloudevent", public=False),
    FunctionRoute("orphan_sweeper", signature="cloudevent", public=False),
)


def find(path: str) -> FunctionRoute | None:
    """The public route serving ``path``: an exact match, else the longest prefix."""
    best: tuple[int, FunctionRoute] | None = None
    for route in ROUTES:
        if not route.public:
            continue
        if path in route.exact:
            return route
        for prefix in route.prefixes:
            if path.startswith(prefix) and (best is None or len(prefix) > best[0]):
                best = (len(prefix), route)
    return best[1] if best else None
