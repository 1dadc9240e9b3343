"""Presence in Redis: who is online on which gateway instance, and last seen.

Keys (all expire, so an instance that dies without a word leaves nothing
behind for long):

- ``wc:presence:<user>`` sorted set: instance id -> deadline (ms). The user is
  online while one deadline is in the future. Each instance refreshes the
  deadlines of its users every third of GATEWAY_PRESENCE_TTL_SECONDS.
- ``wc:presence:<user>:contacts`` the user's direct conversation ids (JSON),
  so whoever publishes "offline" knows where it goes. It and the instance's
  user list live three deadlines, so a reaper still finds them.
- ``wc:seen:<user>`` last seen (ms), kept 90 days.
- ``wc:gw:instances`` sorted set of live instances -> deadline, and
  ``wc:gw:<instance>:users`` the users each has. An instance that finds
  another's deadline passed claims it (ZREM wins once) and publishes
  "offline" for its users who have no other instance.

A change is ONE publish on the presence channel (whatschat.events). Scripts
keep read-modify-publish atomic. See docs/gateway.md ("Presence").
"""

from __future__ import annotations

import time

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from whatschat.events import presence_channel

SEEN_TTL_MS = 90 * 24 * 3600 * 1000
INSTANCES_KEY = "wc:gw:instances"
HEARTBEAT_BATCH = 500  # users refreshed per script call

_ONLINE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])
local before = redis.call('ZCARD', KEYS[1])
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('SET', KEYS[2], ARGV[6], 'PX', ARGV[4] * 3)
redis.call('SADD', KEYS[3], ARGV[7])
redis.call('PEXPIRE', KEYS[3], ARGV[4] * 3)
if before == 0 then
  redis.call('PUBLISH', ARGV[5], cjson.encode({user_id = tonumber(ARGV[7]), online = true,
    last_seen = cjson.null, conversations = cjson.decode(ARGV[6])}))
  return 1
end
return 0
"""

# KEYS: the instance's user set, then (presence, contacts) per user; ARGV:
# instance, deadline, ttl, then the user ids. XX: only refresh an entry that
# exists, so a heartbeat racing with a user's offline never brings them back.
_REFRESH = """
for i = 4, #ARGV do
  local presence = KEYS[2 * (i - 3)]
  redis.call('ZADD', presence, 'XX', ARGV[2], ARGV[1])
  redis.call('PEXPIRE', presence, ARGV[3])
  redis.call('PEXPIRE', KEYS[2 * (i - 3) + 1], ARGV[3] * 3)
  redis.call('SADD', KEYS[1], ARGV[i])
end
return #ARGV - 3
"""

_OFFLINE = """
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('SREM', KEYS[3], ARGV[5])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])
if redis.call('ZCARD', KEYS[1]) == 0 then
  redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[4])
  local contacts = redis.call('GET', KEYS[4])
  local conversations = {}
  if contacts then conversations = cjson.decode(contacts) end
  redis.call('PUBLISH', ARGV[3], cjson.encode({user_id = tonumber(ARGV[5]), online = false,
    last_seen = tonumber(ARGV[2]), conversations = conversations}))
  return 1
end
return 0
"""


def _now_ms() -> int:
    return int(time.time() * 1000)


def _presence_key(user_id: int) -> str:
    return f"wc:presence:{user_id}"


def _contacts_key(user_id: int) -> str:
    return f"wc:presence:{user_id}:contacts"


def _seen_key(user_id: int) -> str:
    return f"wc:seen:{user_id}"


def _instance_users_key(instance_id: str) -> str:
    return f"wc:gw:{instance_id}:users"


class PresenceStore:
    """Presence writes and reads of one gateway instance, plus its small publishes."""

    def __init__(self, url: str, instance_id: str, ttl_seconds: float, timeout: float) -> None:
        self.client = aioredis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout
        )  # commands (not the Pub/Sub reader)
        self.instance_id = instance_id  # this process's id in the presence sets
        self.ttl_ms = int(ttl_seconds * 1000)  # deadline given at each refresh
        self._online = self.client.register_script(_ONLINE)
        self._offline = self.client.register_script(_OFFLINE)
        self._refresh = self.client.register_script(_REFRESH)

    async def online(self, user_id: int, direct_conversations: list[int]) -> bool:
        """The user's first socket here opened; True if they just came online anywhere."""
        now = _now_ms()
        result = await self._online(
            keys=[_presence_key(user_id), _contacts_key(user_id), self._users_key],
            args=[
                self.instance_id,
                now,
                now + self.ttl_ms,
                self.ttl_ms,
                presence_channel(),
                orjson.dumps(sorted(direct_conversations)),
                user_id,
            ],
        )
        return bool(result)

    async def offline(self, user_id: int, instance_id: str | None = None) -> bool:
        """The user's last socket on an instance closed; True if they are now offline."""
        iid = instance_id or self.instance_id
        result = await self._offline(
            keys=[
                _presence_key(user_id),
                _seen_key(user_id),
                _instance_users_key(iid),
                _contacts_key(user_id),
            ],
            args=[iid, _now_ms(), presence_channel(), SEEN_TTL_MS, user_id],
        )
        return bool(result)

    @property
    def _users_key(self) -> str:
        return _instance_users_key(self.instance_id)

    async def heartbeat(self, user_ids: list[int]) -> None:
        """Push this instance's and its users' deadlines forward.

        In batches, one script call each, so a gateway with thousands of users
        never blocks its event loop (or Redis) for long.
        """
        deadline = _now_ms() + self.ttl_ms
        await self.client.zadd(INSTANCES_KEY, {self.instance_id: deadline})
        for start in range(0, len(user_ids), HEARTBEAT_BATCH):
            batch = user_ids[start : start + HEARTBEAT_BATCH]
            keys: list[str] = []
            for user_id in batch:
                keys += (_presence_key(user_id), _contacts_key(user_id))
            await self._refresh(
                keys=[self._users_key, *keys],
                args=[self.instance_id, deadline, self.ttl_ms, *batch],
            )
        # The instance's user list outlives its deadline, so whoever reaps it
        # after a crash still finds it.
        await self.client.pexpire(self._users_key, self.ttl_ms * 3)

    async def reap(self) -> int:
        """Claim instances whose deadline passed; publish offline for their users.

        Returns how many users went offline.
        """
        dead = await self.client.zrangebyscore(INSTANCES_KEY, "-inf", _now_ms())
        gone = 0
        for raw in dead:
            iid = raw.decode()
            if iid == self.instance_id or not await self.client.zrem(INSTANCES_KEY, iid):
                continue  # another instance claimed it first
            for user in await self.client.smembers(_instance_users_key(iid)):
                gone += await self.offline(int(user), instance_id=iid)
            await self.client.delete(_instance_users_key(iid))
        return gone

    async def leave(self) -> None:
        """This instance stops: forget it (its users were set offline one by one)."""
        await self.client.zrem(INSTANCES_KEY, self.instance_id)

    async def lookup(self, user_ids: list[int]) -> list[dict[str, object]]:
        """Online state and last seen (ms or None) of each user."""
        if not user_ids:
            return []
        now = _now_ms()
        pipe = self.client.pipeline(transaction=False)
        for user_id in user_ids:
            pipe.zcount(_presence_key(user_id), now, "+inf")
            pipe.get(_seen_key(user_id))
        replies = await pipe.execute()
        users: list[dict[str, object]] = []
        for index, user_id in enumerate(user_ids):
            live, seen = replies[2 * index], replies[2 * index + 1]
            users.append(
                {
                    "user_id": user_id,
                    "online": bool(live),
                    "last_seen": None if live or seen is None else int(seen),
                }
            )
        return users

    async def publish(self, channel: str, payload: bytes) -> None:
        await self.client.publish(channel, payload)

    async def ping(self) -> None:
        await self.client.ping()

    async def close(self) -> None:
        await self.client.aclose()


__all__ = ["PresenceStore", "RedisError"]
