"""The gateway beside Socket.IO v4 (Redis adapter + Redis emitter) on the same machine.

Starts an embedded PostgreSQL and Redis, then for each system and each N
(1,000 and 5,000 clients on loopback):

1. starts the server (``whatschat gateway``, or ``node bench/socketio/server.js``)
   and measures its idle RSS, connects N clients, measures RSS again:
   memory per connection = RSS delta / N;
2. **broadcast**: every client is in one conversation (Socket.IO: one room);
   a separate process publishes K events to Redis at a fixed rate above what
   either server can deliver, so deliveries/s is each server's ceiling;
3. **targeted**: each event goes to one user (their own conversation; in
   Socket.IO the room ``u:<id>``), at increasing rates; the highest rate whose
   p99 stays under 100 ms with nothing lost is the figure.

For every run it prints deliveries/s, p50/p99 latency (publish to client
receipt, both clocks are this machine's), server CPU microseconds per
delivery (``/proc/<pid>/stat``), and deliveries lost (must be 0).

Our events are real ``message.created`` envelopes with a seq, on conversation
channels, and the messages exist in PostgreSQL (inserted before each run), so
the gateway's repair path has the data it would have in production. The
Socket.IO emitter sends the same JSON object.

Clients: one Python asyncio process (uvloop) speaking raw WebSocket for both
servers (the gateway's protocol, or Engine.IO v4 + Socket.IO packets): one
client core is cheaper this way than websockets or socket.io-client, and
the same code measures both servers. On 2 cores the client can cap the
broadcast figure: CPU per delivery is the fairer comparison there.

Run: ``.venv/bin/python bench/gateway_bench.py [--clients 1000 5000] [--quick]``
(needs ``npm install`` in bench/socketio; ``--profile`` records a py-spy
profile of the gateway during the broadcast run if py-spy is installed).
Figures are recorded in docs/gateway.md.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import contextlib
import json
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
SOCKETIO_DIR = ROOT / "bench" / "socketio"
CLK_TCK = os.sysconf("SC_CLK_TCK")
TEXT = "The quick brown fox jumps over the lazy dog; a chat message of ordinary length. " * 1


# --- the load client (a subprocess: `gateway_bench.py client ...`) -----------------


class RawSocket(asyncio.Protocol):
    """A minimal WebSocket client: handshake, unmasked server frames, pongs.

    Sends with an all-zero masking key (the payload is unchanged), which
    servers accept; this is a load generator, not a browser.
    """

    def __init__(self, load: Load, path: str, hello: bytes | None, sio: bool) -> None:
        self.load = load
        self.path = path
        self.hello = hello  # our gateway: the hello frame to send once upgraded
        self.sio = sio  # Engine.IO/Socket.IO framing
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.upgraded = False
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.count = 0  # events received

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        key = "dGhlIHNhbXBsZSBub25jZQ=="
        request = (
            f"GET {self.path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        transport.write(request.encode())  # type: ignore[attr-defined]

    def send_text(self, payload: bytes) -> None:
        size = len(payload)
        head = bytes((129, 128 | size)) if size < 126 else b"\x81\xfe" + size.to_bytes(2, "big")
        assert self.transport is not None
        self.transport.write(head + b"\x00\x00\x00\x00" + payload)

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        if not self.upgraded:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            if not buf.startswith(b"HTTP/1.1 101"):
                self.ready.set_exception(ConnectionError(bytes(buf[:60]).decode()))
                return
            del buf[: end + 4]
            self.upgraded = True
            if self.hello is not None:
                self.send_text(self.hello)
        pos = 0
        size = len(buf)
        load = self.load
        while size - pos >= 2:
            b1 = buf[pos + 1] & 0x7F
            head = 2
            if b1 == 126:
                if size - pos < 4:
                    break
                b1 = int.from_bytes(buf[pos + 2 : pos + 4], "big")
                head = 4
            elif b1 == 127:
                if size - pos < 10:
                    break
                b1 = int.from_bytes(buf[pos + 2 : pos + 10], "big")
                head = 10
            end = pos + head + b1
            if end > size:
                break
            opcode = buf[pos] & 0x0F
            payload = bytes(buf[pos + head : end])
            pos = end
            if opcode == 1:
                self.on_text(payload, load)
            elif opcode == 9:
                self.transport.write(b"\x8a\x80\x00\x00\x00\x00")  # type: ignore[union-attr]
            elif opcode == 8:
                load.closed += 1
        del buf[:pos]

    def on_text(self, payload: bytes, load: Load) -> None:
        at = payload.rfind(b'"t":')
        if at > 0 and (payload.startswith(b"42") or payload.startswith(b'{"v"')):
            stop = payload.index(b"}", at)
            load.latencies.append(time.time() * 1000 - float(payload[at + 4 : stop]))
            self.count += 1
            load.received += 1
            load.last = time.time()
            return
        if self.sio:
            if payload == b"2":
                self.send_text(b"3")  # Engine.IO ping -> pong
            elif payload.startswith(b"0{"):
                self.send_text(b"40")  # open -> connect to the main namespace
            elif payload.startswith(b"40") and not self.ready.done():
                self.ready.set_result(None)
        elif payload.startswith(b'{"op":"ready"') and not self.ready.done():
            self.ready.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        self.load.lost_connections += 1
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(f"closed during handshake: {exc}"))


class Load:
    """Every client socket of the load process and what they received."""

    def __init__(self) -> None:
        self.sockets: list[RawSocket] = []
        self.latencies: array.array[float] = array.array("d")
        self.received = 0
        self.last = 0.0
        self.closed = 0
        self.lost_connections = 0

    def reset(self) -> None:
        self.latencies = array.array("d")
        self.received = 0
        self.last = 0.0
        for s in self.sockets:
            s.count = 0

    def stats(self) -> dict[str, Any]:
        ordered = sorted(self.latencies)

        def pct(f: float) -> float:
            return ordered[min(len(ordered) - 1, int(f * len(ordered)))] if ordered else 0.0

        return {
            "received": self.received,
            "last": self.last,
            "p50": pct(0.50),
            "p99": pct(0.99),
            "max": ordered[-1] if ordered else 0.0,
            "counts": [s.count for s in self.sockets],
            "closed": self.closed,
            "lost_connections": self.lost_connections,
        }


async def client_main(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    load = Load()
    credentials = json.loads(Path(args.credentials).read_text())
    gate = asyncio.Semaphore(100)

    async def open_one(user_id: int, token: str) -> None:
        async with gate:
            if args.kind == "sio":
                path = f"/socket.io/?EIO=4&transport=websocket&user={user_id}"
                hello = None
            else:
                path = "/v1/socket"
                hello = orjson.dumps({"op": "hello", "token": token})
            _, sock = await loop.create_connection(
                lambda: RawSocket(load, path, hello, args.kind == "sio"), "127.0.0.1", args.port
            )
            await asyncio.wait_for(sock.ready, 60)
            load.sockets.append(sock)

    await asyncio.gather(*(open_one(int(uid), tok) for uid, tok in credentials))
    print(json.dumps({"connected": len(load.sockets)}), flush=True)
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := (await reader.readline()).decode().strip():
        if line == "reset":
            load.reset()
            print("{}", flush=True)
        elif line == "count":
            print(json.dumps({"received": load.received}), flush=True)
        elif line == "stats":
            print(json.dumps(load.stats()), flush=True)
        elif line == "quit":
            break
    for s in load.sockets:
        if s.transport is not None:
            s.transport.close()


# --- our publisher (a subprocess: `gateway_bench.py publish ...`) --------------------


def publish_main(args: argparse.Namespace) -> None:
    import redis

    plan = json.loads(Path(args.plan).read_text())
    client = redis.Redis.from_url(args.redis_url)
    targets: list[list[Any]] = plan["targets"]  # [conversation_id, seq] per event
    template = plan["event"]
    rate = plan["rate"]
    started = time.time()
    sent = 0
    total = len(targets)
    while sent < total:
        due = min(total, int((time.time() - started) * rate) + 1)
        pipe = client.pipeline(transaction=False)
        while sent < due:
            cid, seq = targets[sent]
            now = time.time()
            envelope = {
                "v": 1,
                "id": uuid.uuid4().hex,
                "type": "message.created",
                "ts": int(now * 1000),
                "conversation_id": cid,
                "seq": seq,
                "user_id": None,
                "data": {
                    "message": {**template["message"], "conversation_id": cid, "seq": seq},
                    "n": sent,
                    "t": now * 1000,
                },
            }
            pipe.publish(f"wc:c:{cid}", orjson.dumps(envelope))
            sent += 1
        pipe.execute()
        if sent < total:
            time.sleep(0.001)
    print(json.dumps({"started": started * 1000, "sent": sent}), flush=True)


# --- the orchestrator --------------------------------------------------------------


def proc_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


@dataclass
class RunResult:
    deliveries: int
    expected: int
    seconds: float
    p50: float
    p99: float
    cpu_us_per_delivery: float

    @property
    def rate(self) -> float:
        return self.deliveries / self.seconds if self.seconds else 0.0

    @property
    def lost(self) -> int:
        return self.expected - self.deliveries


class LoadProcess:
    def __init__(self, kind: str, port: int, credentials: Path) -> None:
        self.process = subprocess.Popen(
            [
                sys.executable,
                __file__,
                "client",
                "--kind",
                kind,
                "--port",
                str(port),
                "--credentials",
                str(credentials),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        connected = self._line(300)
        self.connected = int(connected["connected"])

    def _line(self, timeout: float) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"load client exited with {self.process.poll()}")
        result: dict[str, Any] = json.loads(line)
        return result

    def ask(self, command: str) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        return self._line(60)

    def close(self) -> None:
        with contextlib.suppress(BrokenPipeError, RuntimeError, ValueError):
            self.ask("quit")
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()


class System:
    """One server under test: start, publish a plan, stop."""

    name = ""
    pid = 0
    port = 0
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None: ...
    def publish(self, plan: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def _launch(self, command: list[str], env: dict[str, str], cwd: Path, **popen: Any) -> None:
        """Start the server process and wait until it listens on ``port``, then a second."""
        from whatschat import embedded

        self.process = subprocess.Popen(command, env=env, cwd=cwd, **popen)
        embedded.wait_for_port(self.port, 30, self.process)
        self.pid = self.process.pid
        time.sleep(1.0)

    def stop(self) -> None:
        from whatschat import embedded

        embedded.stop_process(self.process, signal.SIGTERM, 20)


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        from whatschat import embedded, tokens
        from whatschat.storage import migrations

        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="gateway-bench-"))
        self.pg = embedded.EmbeddedPostgres(self.tmp / "pg")
        self.pg.start()
        self.redis = embedded.EmbeddedRedis(self.tmp / "redis")
        self.redis.start()
        migrations.apply(self.pg.url)
        pair = tokens.generate_key_pair("bench")
        self.env = {
            **os.environ,
            "DATABASE_URL": self.pg.url,
            "REDIS_URL": self.redis.url,
            **pair.settings(),
            "LOG_LEVEL": "WARNING",
            "GATEWAY_MAX_CONNECTIONS_PER_USER": "10",
            "DATABASE_POOL_MAX_SIZE": "8",
        }
        os.environ.update({k: v for k, v in self.env.items() if k.isupper()})
        from whatschat.config import get_settings

        get_settings.cache_clear()
        self.users: list[int] = []
        self.personal: dict[int, int] = {}  # user -> their own conversation
        self.group = 0
        self.last_seq: dict[int, int] = {}
        import psycopg

        self.db = psycopg.connect(self.pg.url, autocommit=True)
        self.template = {
            "message": {
                "id": 1,
                "conversation_id": 0,
                "seq": 0,
                "sender_id": 1,
                "client_msg_id": uuid.uuid4().hex,
                "kind": "text",
                "text": TEXT.strip(),
                "reply_to_seq": None,
                "attachment": None,
                "system": None,
                "created_at": "2026-01-01T00:00:00Z",
                "edited_at": None,
                "deleted": False,
            }
        }

    def make_users(self, count: int) -> Path:
        """Users (each in the broadcast group and in a conversation of their own)."""
        from whatschat import tokens

        need = count - len(self.users)
        if need > 0:
            rows = self.db.execute(
                "INSERT INTO users (username, display_name, password_hash)"
                " SELECT 'bench' || g, 'Bench ' || g, 'x'"
                " FROM generate_series(%s::int, %s::int) g RETURNING id",
                (len(self.users) + 1, count),
            ).fetchall()
            new = [int(r[0]) for r in rows]
            if not self.group:
                self.group = int(
                    self.db.execute(
                        "INSERT INTO conversations (kind, title) VALUES ('group', 'all')"
                        " RETURNING id"
                    ).fetchone()[0]  # type: ignore[index]
                )
                self.last_seq[self.group] = 0
            convs = self.db.execute(
                "INSERT INTO conversations (kind, title)"
                " SELECT 'group', 'me' FROM generate_series(1, %s::int) RETURNING id",
                (len(new),),
            ).fetchall()
            for user_id, (cid,) in zip(new, convs, strict=True):
                self.personal[user_id] = int(cid)
                self.last_seq[int(cid)] = 0
            self.db.execute(
                "INSERT INTO members (conversation_id, user_id)"
                " SELECT %s, u FROM unnest(%s::bigint[]) u"
                " UNION ALL SELECT c, u FROM unnest(%s::bigint[], %s::bigint[]) AS t(c, u)",
                (self.group, new, [self.personal[u] for u in new], new),
            )
            self.users.extend(new)
        path = self.tmp / f"credentials-{count}.json"
        creds = [[u, tokens.issue_access_token(u, f"bench{u}")[0]] for u in self.users[:count]]
        path.write_text(json.dumps(creds))
        return path

    def store_messages(self, targets: list[list[int]]) -> None:
        """Insert the messages the plan will announce (seq order per conversation)."""
        per: dict[int, int] = {}
        for cid, _ in targets:
            per[cid] = per.get(cid, 0) + 1
        cids = list(per)
        self.db.execute(
            "INSERT INTO messages (conversation_id, seq, sender_id, kind, body)"
            " SELECT t.c, g, NULL, 'text', %s"
            " FROM unnest(%s::bigint[], %s::bigint[], %s::bigint[]) AS t(c, first, n),"
            " generate_series(t.first + 1, t.first + t.n) g",
            (TEXT, cids, [self.last_seq[c] for c in cids], [per[c] for c in cids]),
        )
        self.db.execute(
            "UPDATE conversations c SET last_seq = c.last_seq + t.n"
            " FROM unnest(%s::bigint[], %s::bigint[]) AS t(id, n) WHERE c.id = t.id",
            (cids, [per[c] for c in cids]),
        )
        for cid in cids:
            self.last_seq[cid] += per[cid]

    def plan(self, kind: str, users: list[int], count: int, rng: random.Random) -> list[list[int]]:
        """[conversation, seq] per event."""
        targets: list[list[int]] = []
        next_seq = dict(self.last_seq)
        for _ in range(count):
            cid = self.group if kind == "broadcast" else self.personal[rng.choice(users)]
            next_seq[cid] += 1
            targets.append([cid, next_seq[cid]])
        return targets

    def close(self) -> None:
        self.db.close()
        self.redis.stop()
        self.pg.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)


class Ours(System):
    name = "gateway"

    def __init__(self, bench: Bench) -> None:
        from whatschat import embedded

        self.bench = bench
        self.port = embedded.free_port()
        self.http_port = embedded.free_port()

    def start(self) -> None:
        env = {
            **self.bench.env,
            "GATEWAY_PORT": str(self.port),
            "GATEWAY_HTTP_PORT": str(self.http_port),
            "GATEWAY_DRAIN_SECONDS": "2",
        }
        self._launch([sys.executable, "-m", "whatschat.cli", "gateway"], env, ROOT)

    def publish(self, plan: dict[str, Any]) -> dict[str, Any]:
        path = self.bench.tmp / "plan.json"
        path.write_text(json.dumps({**plan, "event": self.bench.template}))
        out = subprocess.run(
            [sys.executable, __file__, "publish", "--redis-url", self.bench.redis.url, "--plan",
             str(path)],
            capture_output=True, text=True, check=True, cwd=ROOT,
        )  # fmt: skip
        result: dict[str, Any] = json.loads(out.stdout)
        return result


class SocketIO(System):
    name = "socket.io"

    def __init__(self, bench: Bench) -> None:
        from whatschat import embedded

        self.bench = bench
        self.port = embedded.free_port()

    def start(self) -> None:
        env = {**os.environ, "PORT": str(self.port), "REDIS_URL": self.bench.redis.url}
        self._launch(["node", "server.js"], env, SOCKETIO_DIR, stdout=subprocess.DEVNULL)

    def publish(self, plan: dict[str, Any]) -> dict[str, Any]:
        rooms = [
            "all" if cid == self.bench.group else f"u:{self.user_of[cid]}"
            for cid, _ in plan["targets"]
        ]
        path = self.bench.tmp / "sio-plan.json"
        event = {
            **self.bench.template,
            "message": {**self.bench.template["message"], "conversation_id": 1, "seq": 1},
        }
        path.write_text(json.dumps({"rate": plan["rate"], "targets": rooms, "event": event}))
        out = subprocess.run(
            ["node", "emitter.js", self.bench.redis.url, str(path)],
            capture_output=True, text=True, check=True, cwd=SOCKETIO_DIR,
        )  # fmt: skip
        result: dict[str, Any] = json.loads(out.stdout)
        return result

    @property
    def user_of(self) -> dict[int, int]:
        return {cid: user for user, cid in self.bench.personal.items()}


def run_plan(
    system: System, load: LoadProcess, bench: Bench, targets: list[list[int]], rate: float,
    expected_per_socket: dict[int, int] | None = None,
) -> RunResult:  # fmt: skip
    bench.store_messages(targets)
    load.ask("reset")
    cpu_before = proc_cpu_seconds(system.pid)
    total_expected = (
        len(targets) * load.connected
        if expected_per_socket is None
        else sum(expected_per_socket.values())
    )
    published = system.publish({"rate": rate, "targets": targets})
    deadline = time.time() + 30
    received = 0
    while time.time() < deadline:
        received = int(load.ask("count")["received"])
        if received >= total_expected:
            break
        time.sleep(0.2)
    time.sleep(0.3)
    stats = load.ask("stats")
    cpu = proc_cpu_seconds(system.pid) - cpu_before
    seconds = max(1e-6, stats["last"] - published["started"] / 1000)
    deliveries = int(stats["received"])
    return RunResult(
        deliveries=deliveries,
        expected=total_expected,
        seconds=seconds,
        p50=float(stats["p50"]),
        p99=float(stats["p99"]),
        cpu_us_per_delivery=cpu * 1e6 / max(1, deliveries),
    )


def measure(bench: Bench, system: System, clients: int, quick: bool) -> dict[str, Any]:
    rng = random.Random(clients)
    credentials = bench.make_users(clients)
    users = bench.users[:clients]
    system.start()
    rss_idle = proc_rss_bytes(system.pid)
    load = LoadProcess("sio" if isinstance(system, SocketIO) else "ours", system.port, credentials)
    time.sleep(2.0)
    rss_connected = proc_rss_bytes(system.pid)
    result: dict[str, Any] = {
        "system": system.name,
        "clients": clients,
        "connected": load.connected,
        "memory_per_connection": (rss_connected - rss_idle) / max(1, load.connected),
    }
    try:
        # Broadcast: K events to everyone, published faster than anyone delivers.
        events = max(20, 200_000 // clients) if not quick else max(10, 50_000 // clients)
        profiler = start_profiler(bench, system, f"broadcast-{clients}")
        targets = bench.plan("broadcast", users, events, rng)
        result["broadcast"] = run_plan(system, load, bench, targets, rate=events * 2)
        stop_profiler(profiler)
        profiler = start_profiler(bench, system, f"targeted-{clients}")
        # Targeted: increasing rates, 3 s each, each event to one random user.
        result["targeted"] = []
        rates = bench.args.rates
        for rate in rates:
            count = int(rate * (1.5 if quick else 3))
            targets = bench.plan("targeted", users, count, rng)
            expected: dict[int, int] = {}
            for cid, _ in targets:
                expected[cid] = expected.get(cid, 0) + 1
            run = run_plan(system, load, bench, targets, rate, expected)
            result["targeted"].append((rate, run))
            if run.p99 > 1000 or run.lost:
                break  # far past its limit: higher rates say nothing more
        stop_profiler(profiler)
    finally:
        load.close()
        system.stop()
    return result


def start_profiler(bench: Bench, system: System, name: str) -> subprocess.Popen[bytes] | None:
    """py-spy (if installed) on the gateway: a collapsed-stack profile in bench/results/."""
    if not bench.args.profile or not isinstance(system, Ours) or not shutil.which("py-spy"):
        return None
    out = ROOT / "bench" / "results" / f"gateway-{name}.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    profiler = subprocess.Popen(
        ["py-spy", "record", "--pid", str(system.pid), "--format", "raw",
         "--output", str(out), "--rate", "250", "--nonblocking"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    time.sleep(1)
    return profiler


def stop_profiler(profiler: subprocess.Popen[bytes] | None) -> None:
    if profiler is not None:
        profiler.send_signal(signal.SIGINT)
        profiler.wait(30)


def best_targeted(runs: list[tuple[int, RunResult]]) -> tuple[int, RunResult | None]:
    best: tuple[int, RunResult | None] = (0, None)
    for rate, run in runs:
        if run.p99 < 100 and run.lost == 0:
            best = (rate, run)
    return best


def report(results: list[dict[str, Any]]) -> None:
    print()
    print(f"machine: {os.cpu_count()} cores, {sys.version.split()[0]}")
    header = (
        f"{'system':<10} {'N':>5} {'workload':<22} {'deliveries/s':>13} {'p50 ms':>8} "
        f"{'p99 ms':>8} {'CPU us/dlv':>10} {'lost':>6}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        b: RunResult = r["broadcast"]
        print(
            f"{r['system']:<10} {r['clients']:>5} {'broadcast':<22} {b.rate:>13,.0f} "
            f"{b.p50:>8.1f} {b.p99:>8.1f} {b.cpu_us_per_delivery:>10.2f} {b.lost:>6}"
        )
        for rate, run in r["targeted"]:
            print(
                f"{r['system']:<10} {r['clients']:>5} {f'targeted @{rate}/s':<22} "
                f"{run.rate:>13,.0f} {run.p50:>8.1f} {run.p99:>8.1f} "
                f"{run.cpu_us_per_delivery:>10.2f} {run.lost:>6}"
            )
        print(
            f"{r['system']:<10} {r['clients']:>5} {'idle memory/conn':<22} "
            f"{r['memory_per_connection'] / 1024:>10.1f} KiB"
        )
    print()
    print("ours / socket.io")
    by = {(r["system"], r["clients"]): r for r in results}
    for clients in sorted({r["clients"] for r in results}):
        ours, theirs = by.get(("gateway", clients)), by.get(("socket.io", clients))
        if not ours or not theirs:
            continue
        ob, tb = ours["broadcast"], theirs["broadcast"]
        o_rate, _ = best_targeted(ours["targeted"])
        t_rate, _ = best_targeted(theirs["targeted"])
        print(
            f"  N={clients}: broadcast deliveries/s x{ob.rate / max(tb.rate, 1):.2f}, "
            f"CPU per delivery x{tb.cpu_us_per_delivery / max(ob.cpu_us_per_delivery, 1e-9):.2f}"
            f" less; targeted best rate (p99<100 ms, 0 lost) {o_rate}/s vs {t_rate}/s; "
            f"memory/conn {ours['memory_per_connection'] / 1024:.1f} KiB vs "
            f"{theirs['memory_per_connection'] / 1024:.1f} KiB"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command")
    client = sub.add_parser("client")
    client.add_argument("--kind", choices=["ours", "sio"], required=True)
    client.add_argument("--port", type=int, required=True)
    client.add_argument("--credentials", required=True)
    publish = sub.add_parser("publish")
    publish.add_argument("--redis-url", required=True)
    publish.add_argument("--plan", required=True)
    parser.add_argument("--clients", type=int, nargs="+", default=[1000, 5000])
    parser.add_argument(
        "--rates", type=int, nargs="+", default=[2000, 5000, 10000, 15000, 20000, 30000]
    )
    parser.add_argument("--systems", nargs="+", default=["gateway", "socket.io"])
    parser.add_argument("--quick", action="store_true", help="shorter runs")
    parser.add_argument("--profile", action="store_true", help="py-spy the gateway (broadcast)")
    args = parser.parse_args()
    if args.command == "client":
        try:
            import uvloop

            uvloop.run(client_main(args))
        except ImportError:
            asyncio.run(client_main(args))
        return
    if args.command == "publish":
        publish_main(args)
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 65536)), hard))
    if "socket.io" in args.systems and not (SOCKETIO_DIR / "node_modules").exists():
        subprocess.run(["npm", "install", "--no-audit", "--no-fund"], cwd=SOCKETIO_DIR, check=True)
    bench = Bench(args)
    results = []
    try:
        for clients in args.clients:
            for name in args.systems:
                system: System = Ours(bench) if name == "gateway" else SocketIO(bench)
                print(f"-- {name}, {clients} clients", flush=True)
                results.append(measure(bench, system, clients, args.quick))
    finally:
        bench.close()
    report(results)


if __name__ == "__main__":
    main()
