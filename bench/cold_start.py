"""Cold start of every function, side by side with a bare functions-framework function.

For each function target (functions/<target>.py that exists), start the
process exactly as its container does — ``whatschat serve-function``
(granian serving the functions-framework app), WORKERS/THREADS from
knative/scaling.yaml, PORT, the settings — and time process start -> first
response produced by the function's own code. The floor is a bare
functions-framework "hello" function started by functions-framework's own
CLI (gunicorn) in the same run; "hello, our server" is the same hello
started the container's way, so the difference of the two is what our
server costs a cold start; "send, f-f CLI" does the same for a real
function. Rounds interleave the targets so machine noise
hits all alike. Prints each target's median and the ratio to the floor's
median (target: within 1.3x). Record the figures in docs/operations.md.

A third reference, "hello + libraries", is the same hello function (our
server) that first imports the libraries every function of ours needs to do its work
(psycopg and its pool, redis, pydantic, pydantic-settings, PyJWT with
cryptography's Ed25519, orjson) and nothing of ours: the column "x libs"
says how far each function is from that — what our own code and settings
add to a cold start.

What counts as the first response:
  - HTTP functions: any answer of the function's router to a GET on one of
    its paths (2xx, or the 4xx problem it answers without a token or for a
    method it does not serve, e.g. 401/405) — proof its module is loaded and
    it ran. A 5xx or an answer that is not our JSON does not count.
  - CloudEvent functions (sweepers): a 2xx to a PingSource-shaped event,
    which includes their real work against PostgreSQL (one sweep).

    .venv/bin/python bench/cold_start.py [--rounds 5] [--why TARGET]

``--why TARGET`` prints the module's slowest imports (python -X importtime).
Needs the `local` extra (embedded PostgreSQL, Redis, S3).
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import shared  # noqa: E402

from functions.routes import ROUTES, FunctionRoute  # noqa: E402
from knative.render import load_scaling  # noqa: E402
from whatschat import embedded  # noqa: E402

BIN = Path(sys.executable).parent
FLOOR = "hello (floor)"
HELLO_OURS = "hello, our server"
SEND_FRAMEWORK = "send, f-f CLI"  # send as functions-framework's CLI would serve it
HELLO = """import functions_framework


@functions_framework.http
def hello(request):
    return "ok"
"""
LIBRARIES = "hello + libraries"
HELLO_LIBRARIES = (
    "import jwt\n"
    "import orjson\n"
    "import psycopg\n"
    "import psycopg_pool\n"
    "import pydantic\n"
    "import pydantic_settings\n"
    "import redis\n"
    "from cryptography.hazmat.primitives.asymmetric import ed25519\n" + HELLO
)
TARGET_RATIO = 1.3
OUR_SERVER = "whatschat serve-function"
FRAMEWORK_CLI = "functions-framework"


def _probe_path(route: FunctionRoute) -> str:
    if route.exact:
        return route.exact[0]
    return route.prefixes[0] + "1"


def _first_response(port: int, route: FunctionRoute | None) -> bool:
    """True once the server answered with the function's own response."""
    url = f"http://127.0.0.1:{port}"
    headers: dict[str, str] = {}
    data: bytes | None = None
    if route is None:
        url += "/"
    elif route.signature == "cloudevent":
        url += "/"
        data = b"{}"
        headers = {
            "Content-Type": "application/json",
            "ce-specversion": "1.0",
            "ce-type": "dev.knative.sources.ping",
            "ce-source": "bench/cold_start",
            "ce-id": uuid.uuid4().hex,
        }
    else:
        url += _probe_path(route)
    request = urllib.request.Request(url, data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            response.read()
            return True
    except urllib.error.HTTPError as error:
        with error:
            kind = error.headers.get("Content-Type", "")
            ours = kind.startswith("application/problem+json") or kind == "application/json"
            if route is not None and route.signature == "http" and error.code < 500 and ours:
                return True
            raise RuntimeError(f"{url}: {error.code} {error.read()[:200]!r}") from None
    except (ConnectionError, urllib.error.URLError):
        return False


def measure(
    route: FunctionRoute | str, hello_dir: Path, env: dict[str, str], server: str = OUR_SERVER
) -> float:
    """Seconds from process start to the first response, as the container would run it.

    ``route`` is a function's route, or the name of a hello module in ``hello_dir``;
    ``server`` is OUR_SERVER (the container's) or FRAMEWORK_CLI.
    """
    port = embedded.free_port()
    if isinstance(route, str):
        target, source, signature = "hello", str(hello_dir / f"{route}.py"), "http"
    else:
        target, signature = route.target, route.signature
        source = str(ROOT / "functions" / f"{route.target}.py")
    command = [
        *(
            [str(BIN / "functions-framework")]
            if server == FRAMEWORK_CLI
            else [str(BIN / "whatschat"), "serve-function"]
        ),
        f"--target={target}",
        f"--source={source}",
        f"--signature-type={signature}",
        f"--port={port}",
    ]
    started = time.perf_counter()
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{target} exited with {process.returncode}")
            if _first_response(port, None if isinstance(route, str) else route):
                return time.perf_counter() - started
            if time.perf_counter() - started > 60:
                raise TimeoutError(f"{target}: no response in 60 s")
            time.sleep(0.003)
    finally:
        embedded.stop_process(process, signal.SIGTERM, 15)


def why(target: str) -> None:
    """Print the slowest imports of one function module (cumulative microseconds)."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", str(ROOT / "functions" / f"{target}.py")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    rows = []
    for line in result.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        # "import time:   self [us] | cumulative | imported package"
        self_part, cumulative_us, name = line.split("|")
        rows.append((int(cumulative_us), int(self_part.split(":")[-1]), name.rstrip()))
    print(f"slowest imports of functions/{target}.py (cumulative ms; indent = nesting):")
    for cumulative, _, name in sorted(rows, reverse=True)[:25]:
        print(f"  {cumulative / 1000:8.1f}  {name}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--why", default="", help="print a target's slowest imports and exit")
    args = parser.parse_args(argv)
    if args.why:
        why(args.why)
        return 0

    routes = [r for r in ROUTES if (ROOT / "functions" / f"{r.target}.py").exists()]
    missing = [r.target for r in ROUTES if r not in routes]
    scaling = load_scaling()
    with shared.running("cold-start-", s3=True) as running:
        folder = running.folder  # the hello modules go next to the servers' data
        (folder / "hello.py").write_text(HELLO)
        (folder / "hello_libraries.py").write_text(HELLO_LIBRARIES)
        send = next(r for r in routes if r.target == "send")
        # name -> (a hello module in folder or a function's route, the server
        # that runs it); the references first, then every function.
        subjects: dict[str, tuple[FunctionRoute | str, str]] = {
            FLOOR: ("hello", FRAMEWORK_CLI),
            HELLO_OURS: ("hello", OUR_SERVER),
            LIBRARIES: ("hello_libraries", OUR_SERVER),
            SEND_FRAMEWORK: (send, FRAMEWORK_CLI),
        }
        references = set(subjects)
        subjects.update({route.target: (route, OUR_SERVER) for route in routes})
        base_env = dict(os.environ)
        samples: dict[str, list[float]] = {name: [] for name in subjects}
        for round_number in range(1, args.rounds + 1):
            print(f"round {round_number}/{args.rounds}", file=sys.stderr, flush=True)
            for name, (subject, runner) in subjects.items():
                target = subject if isinstance(subject, str) else subject.target
                deployed = scaling.get(target)
                workers, threads = (deployed.workers, deployed.threads) if deployed else (1, 8)
                env = {**base_env, "WORKERS": str(workers), "THREADS": str(threads)}
                samples[name].append(measure(subject, folder, env, runner))

    floor = statistics.median(samples[FLOOR])
    libraries = statistics.median(samples[LIBRARIES])
    print(f"\ncold start, process start -> first response, {args.rounds} rounds, median (min)")
    print(f"{'function':<22} {'median ms':>10} {'min ms':>8} {'x floor':>8} {'x libs':>7}")
    misses = []
    for name, values in samples.items():
        median = statistics.median(values)
        ratio = median / floor
        flag = "" if name in references or ratio <= TARGET_RATIO else "  > 1.3x"
        if flag:
            misses.append(name)
        print(
            f"{name:<22} {median * 1000:10.0f} {min(values) * 1000:8.0f} {ratio:8.2f}"
            f" {median / libraries:7.2f}{flag}"
        )
    if missing:
        print(f"\nnot measured (no module yet): {', '.join(missing)}")
    if misses:
        print(f"\nabove {TARGET_RATIO}x the floor: {', '.join(misses)} (see --why TARGET)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
