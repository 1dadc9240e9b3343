"""The reference web client (web/) in a real browser against a real `make dev` stack.

Debian's Chromium, driven by Playwright over CDP (no browser download: the
system binary is the executable). Two isolated browser contexts are two
people. The stack is `whatschat dev` as a subprocess on free ports, exactly
what a newcomer runs. See docs/web-client.md.

Set WHATSCHAT_SCREENSHOT=docs/screenshot-chat.png to also save a screenshot of
the chat view (kept in docs/ for the README).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import time
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from whatschat import embedded
from whatschat.embedded import free_port

CHROMIUM = "/usr/bin/chromium"
WEB_DIR = Path(__file__).resolve().parent.parent / "web"
SKIP_REASON = "chromium not installed: run .ci/system-packages"

if not Path(CHROMIUM).exists() and shutil.which("chromium") is None:
    pytest.skip(SKIP_REASON, allow_module_level=True)
pytest.importorskip(
    "playwright.sync_api", reason="playwright not installed: pip install -e '.[dev]'"
)

from playwright.sync_api import (  # noqa: E402 - only after the skip checks above
    Browser,
    BrowserContext,
    Page,
    expect,
    sync_playwright,
)

pytestmark = pytest.mark.browser

# Chromium as root in a container: no sandbox, and nothing that reaches out
# to the network on its own (only loopback exists here).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WAIT_MS = 15_000  # how long a step may take to show on the other screen
expect.set_options(timeout=WAIT_MS)
PASSWORD = "correct horse battery staple"
TOKEN_TTL_SECONDS = 30  # the shortest the settings allow

# Settings the test session may export for its own servers; the stack under
# test starts its own embedded ones instead (as in tests/test_local_stack.py).
_INHERITED = ("DATABASE_URL", "DATABASE_REPLICA_URL", "REDIS_URL", "S3_", "TOKEN_")


# --- the stack and the browser ------------------------------------------------


@pytest.fixture(scope="module")
def dev_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """`whatschat dev` on free ports with its own data folder; its addresses."""
    folder = tmp_path_factory.mktemp("web-stack")
    env = {k: v for k, v in os.environ.items() if not k.startswith(_INHERITED)}
    api_port = free_port()
    env.update(
        WHATSCHAT_DATA_DIR=str(folder / "data"),
        WHATSCHAT_API_PORT=str(api_port),
        # The page's origin may upload to the bucket (moto reflects any origin,
        # real S3 and LocalStack apply this rule).
        S3_CORS_ORIGINS=f"http://127.0.0.1:{api_port}",
        GATEWAY_PORT=str(free_port()),
        GATEWAY_HTTP_PORT=str(free_port()),
        SEND_RATE_LIMIT="1000",  # the history test sends 70 messages at once
        # Short-lived access tokens: the client renews them (and rotates the
        # refresh token) every few seconds in every test, as it must.
        ACCESS_TOKEN_TTL_SECONDS=str(TOKEN_TTL_SECONDS),
    )
    ready = folder / "ready.json"
    log = (folder / "stack.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "whatschat.cli", "dev", "--ready-file", str(ready)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 120
        while not ready.exists():
            if process.poll() is not None:
                pytest.fail(f"whatschat dev exited: {(folder / 'stack.log').read_text()[-3000:]}")
            assert time.monotonic() < deadline, "whatschat dev not ready after 120 s"
            time.sleep(0.2)
        yield json.loads(ready.read_text())
    finally:
        embedded.stop_process(process, signal.SIGINT, 20)
        log.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    # Playwright gives every launch a fresh temporary profile (user data dir).
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium"),
            headless=True,
            args=CHROMIUM_ARGS,
        )
        yield chromium
        chromium.close()


class Person:
    """One person at one browser window: an isolated context (own storage, own socket)."""

    def __init__(self, context: BrowserContext, page: Page, username: str) -> None:
        self.context = context  # isolated: cookies, sessionStorage, network state
        self.page = page  # the client's one tab
        self.username = username  # unique per test
        self.errors: list[str] = []  # uncaught page errors; a test ends with none
        page.on("pageerror", lambda error: self.errors.append(str(error)))


@pytest.fixture
def people(dev_stack: dict[str, str], browser: Browser) -> Iterator[Any]:
    """Make signed-up people, each in their own browser context."""
    made: list[Person] = []
    suffix = uuid.uuid4().hex[:6]

    def make(name: str, *, width: int = 1000, height: int = 700) -> Person:
        context = browser.new_context(viewport={"width": width, "height": height})
        page = context.new_page()
        page.set_default_timeout(WAIT_MS)
        username = f"{name.lower()}_{suffix}"
        page.goto(dev_stack["web_client"])
        signup = page.locator("#register-form")
        signup.get_by_label("Username").fill(username)
        signup.get_by_label("Display name").fill(name)
        signup.get_by_label("Password").fill(PASSWORD)
        signup.get_by_role("button", name="Create account").click()
        expect(page.locator("#connection")).to_have_text("Online")
        person = Person(context, page, username)
        made.append(person)
        return person

    yield make
    for person in made:
        errors = person.errors
        person.context.close()
        assert errors == [], f"uncaught errors in {person.username}'s page: {errors}"


def open_direct(person: Person, other: Person) -> None:
    """Open the direct chat with `other` by username, as a person would."""
    person.page.get_by_label("Chat with").fill(other.username)
    person.page.get_by_role("button", name="Open", exact=True).click()
    expect(person.page.locator("#composer")).to_be_visible()


def send(person: Person, text: str) -> None:
    box = person.page.get_by_label("Message", exact=True)
    box.fill(text)
    box.press("Enter")


def tiny_png(width: int = 24, height: int = 16) -> bytes:
    """A valid PNG (an evening-sky gradient), built here so the test needs no fixture file."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    rows = bytearray()
    for y in range(height):
        t = y / max(height - 1, 1)
        pixel = bytes((int(40 + 215 * t), int(60 + 90 * t), int(140 - 80 * t)))
        rows += b"\x00" + pixel * width  # filter type 0, then RGB pixels
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(bytes(rows)))
        + chunk(b"IEND", b"")
    )


@pytest.fixture(scope="module")
def static_web() -> Iterator[str]:
    """web/ alone over HTTP (ES modules do not load from file:// URLs)."""
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

    handler = functools.partial(Quiet, directory=str(WEB_DIR))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


# --- the client's logic alone ---------------------------------------------------

TIMELINE_SCENARIOS = """
async () => {
  const { Timeline } = await import("./timeline.js");
  const msg = (seq, extra = {}) => ({ conversation_id: 7, seq, client_msg_id: null,
    deleted: false, edited_at: null, text: `m${seq}`, ...extra });
  const out = {};

  // In order, then the same messages again (replay after a reconnect).
  let t = new Timeline(7, 0);
  out.inOrder = [1, 2, 3].map((s) => t.accept(msg(s)));
  out.again = [2, 3].map((s) => t.accept(msg(s)));
  out.high = t.high;

  // A gap: 4 missing when 5 arrives; filling it moves the position past 5.
  out.gap = t.accept(msg(5));
  out.highDuringGap = t.high;
  out.missingAfter = t.missingAfter();
  out.fill = t.accept(msg(4));
  out.highAfterFill = t.high;
  out.hasGap = t.hasGap;

  // An edit replaces the copy; an older copy does not undo it.
  out.edit = t.accept(msg(2, { text: "edited", edited_at: "2025-01-01T00:00:00Z" }));
  out.stale = t.accept(msg(2));
  out.text2 = t.messages.get(2).text;

  // Our own pending send is dropped when its stored copy arrives.
  t.pending.set("c-1", { label: "hi" });
  t.accept(msg(6, { client_msg_id: "c-1" }));
  out.pendingLeft = t.pending.size;

  // Seqs we may not see (before joining) close a gap through filledUpTo.
  const late = new Timeline(9, 0);
  out.lateGap = late.accept({ ...msg(12), conversation_id: 9 });
  late.filledUpTo(11);
  out.lateHigh = late.high;

  // History pages below the position are "added", order is by seq.
  const h = new Timeline(7, 10);
  out.history = [9, 10, 8].map((s) => h.accept(msg(s)));
  out.order = h.ordered().map((m) => m.seq);
  out.low = h.low;
  return out;
}
"""


def test_timeline_drops_copies_and_finds_gaps(browser: Browser, static_web: str) -> None:
    page = browser.new_page()
    try:
        page.goto(static_web + "index.html")
        result = page.evaluate(TIMELINE_SCENARIOS)
    finally:
        page.close()
    assert result == {
        "inOrder": ["added", "added", "added"],
        "again": ["duplicate", "duplicate"],
        "high": 3,
        "gap": "gap",
        "highDuringGap": 3,
        "missingAfter": 5,
        "fill": "added",
        "highAfterFill": 5,
        "hasGap": False,
        "edit": "updated",
        "stale": "duplicate",
        "text2": "edited",
        "pendingLeft": 0,
        "lateGap": "gap",
        "lateHigh": 12,
        "history": ["added", "added", "added"],
        "order": [8, 9, 10],
        "low": 8,
    }


# --- the whole system -------------------------------------------------------------


def test_a_message_typed_by_one_appears_for_the_other_with_typing_shown(people: Any) -> None:
    alice, bob = people("Alice"), people("Bob")
    open_direct(alice, bob)
    open_direct(bob, alice)

    alice.page.get_by_label("Message", exact=True).type("Hello Bob", delay=20)
    expect(bob.page.locator("#typing")).to_have_text("Alice is typing…")

    alice.page.get_by_label("Message", exact=True).press("Enter")
    expect(bob.page.locator("#message-list .text")).to_have_text(["Hello Bob"])
    # The typing line goes when the message arrives.
    expect(bob.page.locator("#typing")).to_have_text("")
    # Bob has the chat open: his receipt turns Alice's "Sent" into "Read".
    expect(alice.page.locator("#message-list .mine .receipt")).to_have_text("✓✓ Read")

    send(bob, "Hi Alice!")
    expect(alice.page.locator("#message-list .text")).to_have_text(["Hello Bob", "Hi Alice!"])

    screenshot = os.environ.get("WHATSCHAT_SCREENSHOT")
    if screenshot:
        send(alice, "Sending the plan now, one moment")
        expect(alice.page.locator("#message-list .text")).to_have_count(3)
        alice.page.get_by_label("Attach an image or PDF").set_input_files(
            {"name": "plan.png", "mimeType": "image/png", "buffer": tiny_png(320, 180)}
        )
        expect(bob.page.locator("#message-list img")).to_have_count(1)
        send(bob, "Got it, looks good")
        expect(alice.page.locator("#message-list .text")).to_have_count(4)
        alice.page.wait_for_function(
            "() => [...document.querySelectorAll('#message-list img')]"
            ".every(i => i.complete && i.naturalWidth > 0)"
        )
        # At a person's pace: the gateway drops typing signals less than a second apart.
        bob.page.get_by_label("Message", exact=True).type("See you there", delay=150)
        expect(alice.page.locator("#typing")).to_have_text("Bob is typing…")
        alice.page.screenshot(path=screenshot)


def test_an_uploaded_image_appears_for_the_other(people: Any) -> None:
    alice, bob = people("Alice"), people("Bob")
    open_direct(alice, bob)
    open_direct(bob, alice)

    alice.page.get_by_label("Attach an image or PDF").set_input_files(
        {"name": "green.png", "mimeType": "image/png", "buffer": tiny_png()}
    )
    image = bob.page.locator("#message-list img")
    expect(image).to_have_count(1)
    expect(image).to_have_attribute("alt", "green.png")
    # The browser really loaded the bytes from S3 through the presigned GET.
    bob.page.wait_for_function(
        "() => { const i = document.querySelector('#message-list img');"
        " return i && i.complete && i.naturalWidth === 24 && i.naturalHeight === 16; }"
    )
    # The sender sees it once too (the send answer and the event are one message).
    expect(alice.page.locator("#message-list img")).to_have_count(1)

    # A PDF is a link to a short-lived download address on the object store.
    pdf = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"
    alice.page.get_by_label("Attach an image or PDF").set_input_files(
        {"name": "plan.pdf", "mimeType": "application/pdf", "buffer": pdf}
    )
    link = bob.page.get_by_role("link", name="PDF: plan.pdf")
    expect(link).to_have_attribute("href", re.compile(r"^http://127\.0\.0\.1:\d+/.+plan"))
    href = link.get_attribute("href")
    assert href is not None
    download = bob.page.request.get(href)
    assert download.ok and download.body() == pdf


def test_going_offline_and_back_loses_nothing_and_doubles_nothing(people: Any) -> None:
    alice, bob = people("Alice"), people("Bob")
    open_direct(alice, bob)
    open_direct(bob, alice)
    send(alice, "before 1")
    expect(bob.page.locator("#message-list .text")).to_have_text(["before 1"])
    texts = bob.page.locator("#message-list .text")

    # 1. Bob's network goes: the page sees "offline" and drops its socket.
    # Only the gateway's replay from Bob's positions can bring these back.
    bob.context.set_offline(True)
    expect(bob.page.locator("#connection")).to_have_text("Offline")
    missed = [f"while away {n}" for n in range(1, 6)]
    for text in missed:
        send(alice, text)
    expect(alice.page.locator("#message-list .text")).to_have_count(1 + len(missed))
    bob.context.set_offline(False)
    expect(bob.page.locator("#connection")).to_have_text("Online")
    expected = ["before 1", *missed]
    expect(texts).to_have_text(expected)

    # 2. Offline again, and both write: Bob's message waits as "Sending…" and
    # goes out (once) with its client_msg_id when the network is back.
    bob.context.set_offline(True)
    expect(bob.page.locator("#connection")).to_have_text("Offline")
    send(alice, "meanwhile")
    expect(alice.page.locator("#message-list .text")).to_have_count(len(expected) + 1)
    send(bob, "written offline")
    expect(bob.page.locator("#message-list .pending")).to_have_count(1)
    bob.context.set_offline(False)
    expected += ["meanwhile", "written offline"]
    expect(texts).to_have_text(expected)
    expect(alice.page.locator("#message-list .text")).to_have_text(expected)

    # 3. The socket drops behind the browser's back: reconnect and resume.
    bob.page.evaluate("window.whatschat.gateway.simulateDrop()")
    send(alice, "after the drop")
    expected.append("after the drop")
    expect(bob.page.locator("#connection")).to_have_text("Online")
    expect(texts).to_have_text(expected)

    # Nothing doubled, nothing missing: seqs 1..N on both screens, once each.
    for person in (alice, bob):
        seqs = person.page.eval_on_selector_all(
            "#message-list li[data-seq]", "items => items.map(i => Number(i.dataset.seq))"
        )
        assert seqs == list(range(1, len(expected) + 1)), f"{person.username} sees {seqs}"
        assert person.page.locator("#message-list .pending").count() == 0

    # 4. A reload starts from the server's copy: the same conversation.
    bob.page.reload()
    bob.page.locator("#conversation-list button").first.click()
    expect(texts).to_have_text(expected)


EDIT_AND_DELETE_WHILE_BOB_IS_AWAY = """
async () => {
  // Through the documented HTTP API: the reference client has no buttons for it.
  const { state, api } = window.whatschat;
  const id = state.openId;
  await api.request("PATCH", `/v1/messages/${id}/1`, { body: { text: "first, edited" } });
  await api.request("DELETE", `/v1/messages/${id}/2`);
}
"""


def test_edits_and_deletions_made_while_away_show_after_reconnect(people: Any) -> None:
    alice, bob = people("Alice"), people("Bob")
    open_direct(alice, bob)
    open_direct(bob, alice)
    send(alice, "first")
    send(alice, "second")
    texts = bob.page.locator("#message-list .text")
    expect(texts).to_have_text(["first", "second"])

    # Edits and deletions carry no seq, so the gateway's replay cannot bring
    # them back: the client asks POST /v1/sync with its edit positions.
    bob.context.set_offline(True)
    expect(bob.page.locator("#connection")).to_have_text("Offline")
    alice.page.evaluate(EDIT_AND_DELETE_WHILE_BOB_IS_AWAY)
    expect(alice.page.locator("#message-list .text")).to_have_text(["first, edited"])
    bob.context.set_offline(False)
    expect(bob.page.locator("#connection")).to_have_text("Online")
    expect(texts).to_have_text(["first, edited"])
    expect(bob.page.locator("#message-list .deleted")).to_have_count(1)
    assert bob.errors == []


def test_history_scrolls_back_page_by_page(people: Any) -> None:
    alice, bob = people("Alice"), people("Bob")
    open_direct(alice, bob)
    # 70 messages through the API, as fast as the page can send them.
    alice.page.evaluate(
        """async () => {
          const { api, state } = window.whatschat;
          for (let n = 1; n <= 70; n += 1) {
            await api.request("POST", "/v1/messages", { body: {
              conversation_id: state.openId, client_msg_id: `bulk-${n}`, text: `m${n}` } });
          }
        }"""
    )
    # Bob's page got them all live; a reload starts it from the server's copy.
    bob.page.reload()
    expect(bob.page.locator("#connection")).to_have_text("Online")
    open_direct(bob, alice)
    texts = bob.page.locator("#message-list .text")
    # The newest page first (50), the rest on scrolling up.
    expect(texts).to_have_count(50)
    expect(texts.first).to_have_text("m21")
    expect(texts.last).to_have_text("m70")
    bob.page.locator("#messages").evaluate("box => { box.scrollTop = 0; }")
    expect(texts).to_have_text([f"m{n}" for n in range(1, 71)])
    expect(bob.page.get_by_role("button", name="Load earlier messages")).to_be_hidden()


def test_a_group_and_a_phone_sized_window(people: Any) -> None:
    alice = people("Alice")
    bob = people("Bob", width=390, height=780)  # a phone
    carol = people("Carol")

    alice.page.get_by_role("button", name="New group").click()
    alice.page.get_by_label("Group name").fill("Weekend trip")
    alice.page.get_by_label("Members (usernames, separated by commas)").fill(bob.username)
    alice.page.get_by_role("button", name="Create group").click()
    expect(alice.page.locator("#conversation-title")).to_have_text("Weekend trip")

    alice.page.get_by_role("button", name="Add member").click()
    dialog = alice.page.locator("#member-dialog")
    dialog.get_by_label("Username").fill(carol.username)
    dialog.get_by_role("button", name="Add", exact=True).click()
    expect(dialog).to_be_hidden()
    expect(alice.page.locator("#message-list .system")).to_have_text(
        ["You created the group “Weekend trip”", "You added Carol"]
    )
    send(alice, "Who is in?")

    # Bob, on a phone: the list first, the group in it with three unread
    # messages (two system messages and Alice's, as the server counts them).
    group = bob.page.locator("#conversation-list button", has_text="Weekend trip")
    expect(group).to_be_visible()
    expect(group.locator(".unread")).to_have_text("3")
    # By keyboard: the list items are buttons.
    group.focus()
    bob.page.keyboard.press("Enter")
    # One column: the open conversation replaces the list.
    expect(bob.page.locator("#sidebar")).to_be_hidden()
    expect(bob.page.locator("#message-list .text")).to_have_text(["Who is in?"])
    expect(bob.page.locator("#message-list .sender")).to_have_text(["Alice"])
    bob.page.get_by_role("button", name="Back to conversations").click()
    expect(bob.page.locator("#sidebar")).to_be_visible()
    expect(group.locator(".unread")).to_have_text("")

    # Carol, added after creation, sees the message too.
    carol_group = carol.page.locator("#conversation-list button", has_text="Weekend trip")
    carol_group.click()
    expect(carol.page.locator("#message-list .text")).to_have_text(["Who is in?"])


def test_a_session_outlives_its_access_token(people: Any) -> None:
    alice, bob = people("Alice"), people("Bob")
    open_direct(alice, bob)
    open_direct(bob, alice)
    first = alice.page.evaluate("window.whatschat.api.accessToken")
    # Wait past the first token's expiry (no assertion on timing: the wait
    # only makes sure the token the page started with is dead by now).
    alice.page.wait_for_timeout((TOKEN_TTL_SECONDS + 5) * 1000)
    assert alice.page.evaluate("window.whatschat.api.accessToken") != first
    send(alice, "still here")
    expect(bob.page.locator("#message-list .text")).to_have_text(["still here"])
    send(bob, "me too")
    expect(alice.page.locator("#message-list .text")).to_have_text(["still here", "me too"])
    expect(alice.page.locator("#connection")).to_have_text("Online")
