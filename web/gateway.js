// The one WebSocket a client holds to the gateway (docs/gateway.md).
//
// What a client must do, in order:
//
// 1. Open ws(s)://<gateway>/v1/socket and send `hello` with the access token
//    and its positions: for each conversation, the seq up to which it holds
//    everything. (`positions: null` would mean "fresh start, replay nothing".)
// 2. The gateway replays every missed message as ordinary event frames, then
//    sends `ready`. Live events follow — and may already interleave with the
//    replay; the client drops copies by (conversation_id, seq), so it never
//    needs to care which is which.
// 3. Keep the token fresh: before it expires, send `auth` with a new one.
// 4. When the socket drops — network, server restart (close 1012), slow
//    consumer (4008) — reconnect with backoff and send `hello` again with the
//    positions as they are NOW. That is the whole resume protocol.
// 5. `catch_up` means "too far behind to replay": read that range through
//    GET /v1/history instead.
//
// Frames with an "op" are control frames; frames with a "type" are event
// envelopes (whatschat/events.py), passed to `onEvent` unchanged.

const PROTOCOL_VERSION = 1;
const PING_EVERY_MS = 20000; // application ping: finds a dead socket the browser has not noticed
const PONG_WITHIN_MS = 10000; // no pong by then: the socket is dead, reconnect
const BACKOFF_FIRST_MS = 300;
const BACKOFF_MAX_MS = 15000;
const REFRESH_BEFORE_EXPIRY_MS = 60000; // send a fresh token this long before expiry

// Close codes (gateway/protocol.py, docs/gateway.md) after which the token must be renewed.
const CLOSE_AUTH_FAILED = 4001;
const CLOSE_TOKEN_EXPIRED = 4003;
const CLOSE_TOO_MANY_CONNECTIONS = 4029;

/**
 * The gateway address. The local stack runs it beside the API (port 8081 when
 * the API is on 8080); `?gateway=ws://host:port/v1/socket` overrides it, and
 * is remembered for the tab. Behind one ingress it is the page's own origin.
 */
export function gatewayUrl() {
  const fromQuery = new URLSearchParams(location.search).get("gateway");
  if (fromQuery) sessionStorage.setItem("whatschat.gateway", fromQuery);
  const remembered = sessionStorage.getItem("whatschat.gateway");
  if (remembered) return remembered;
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  if (location.port === "8080") return `${scheme}//${location.hostname}:8081/v1/socket`;
  return `${scheme}//${location.host}/v1/socket`;
}

export class Gateway {
  /**
   * @param {object} hooks
   * @param {string} hooks.url
   * @param {() => string|null} hooks.token the current access token
   * @param {() => Promise<unknown>} hooks.refresh renew the access token
   * @param {() => Record<string, number>} hooks.positions resume positions
   * @param {(event: object) => void} hooks.onEvent an event envelope
   * @param {(state: string) => void} hooks.onState connecting, online, reconnecting, offline
   * @param {(ready: object) => void} hooks.onResumed replay done (`ready` frame)
   * @param {(ranges: object[]) => void} hooks.onCatchUp ranges to read via history
   * @param {(typing: object) => void} hooks.onTyping someone types
   * @param {(presence: object) => void} hooks.onPresence someone came or went
   */
  constructor(hooks) {
    this.hooks = hooks;
    this.socket = null; // the live WebSocket, or null
    this.running = false; // start() called and not stopped
    this.attempt = 0; // failed connection attempts in a row (backoff)
    this.retryTimer = null; // pending reconnect
    this.pingTimer = null; // next application ping
    this.pongTimer = null; // deadline for the pong
    this.authTimer = null; // when to send a fresh token
    this.ready = false; // `ready` received on the current socket
    this.pendingCatchUp = []; // catch_up ranges, handed over on `ready`
    this.renewToken = false; // the last close asked for a new token
    this.typingIntervalMs = 1000; // the gateway drops typing frames closer than this (ready.limits)
    // The browser knows when the network goes: drop the socket at once instead
    // of waiting for a ping to time out, and reconnect as soon as it is back.
    window.addEventListener("offline", () => this._drop("offline"));
    window.addEventListener("online", () => this._reconnectSoon(0));
  }

  start() {
    if (this.running) return;
    this.running = true;
    this.attempt = 0;
    this._connect();
  }

  stop() {
    this.running = false;
    clearTimeout(this.retryTimer);
    this._closeSocket(1000, "signed out");
  }

  /** Tell the members of a conversation that we are typing (ephemeral). */
  sendTyping(conversationId, typing = true) {
    this._send({ op: "typing", conversation_id: conversationId, typing });
  }

  /** Ask the online state of the people we share conversations with. */
  queryPresence() {
    this._send({ op: "presence.query" });
  }

  /** Close the socket as a network drop would (the browser tests use this). */
  simulateDrop() {
    this._drop("dropped");
  }

  async _connect() {
    if (!this.running) return;
    clearTimeout(this.retryTimer);
    this.hooks.onState(this.attempt === 0 ? "connecting" : "reconnecting");
    if (this.renewToken) {
      this.renewToken = false;
      try {
        await this.hooks.refresh();
      } catch {
        // Signed out (refresh rejected) stops us through the session callback;
        // a network failure is retried with the next attempt.
      }
      if (!this.running) return;
    }
    const token = this.hooks.token();
    if (!token) return;
    const socket = new WebSocket(this.hooks.url);
    this.socket = socket;
    this.ready = false;
    socket.addEventListener("open", () => {
      // Positions are read NOW, not when the drop happened: whatever arrived
      // over HTTP meanwhile (our own sends, history) is not replayed again.
      this._send({ op: "hello", v: PROTOCOL_VERSION, token, positions: this.hooks.positions() });
    });
    socket.addEventListener("message", (message) => {
      if (socket === this.socket) this._onFrame(message.data);
    });
    socket.addEventListener("close", (close) => {
      if (socket === this.socket) this._onClose(close.code, close.reason);
    });
  }

  _onFrame(text) {
    let frame;
    try {
      frame = JSON.parse(text);
    } catch {
      return; // not ours to understand
    }
    if (frame.type !== undefined) {
      // An event envelope; versions we do not know are dropped.
      if (frame.v !== 1) return;
      if (frame.type === "typing") {
        this.hooks.onTyping({ conversation_id: frame.conversation_id, ...frame.data });
      } else {
        this.hooks.onEvent(frame);
      }
      return;
    }
    switch (frame.op) {
      case "ready":
        this.ready = true;
        this.attempt = 0;
        if (frame.limits && frame.limits.typing_interval_seconds) {
          this.typingIntervalMs = frame.limits.typing_interval_seconds * 1000;
        }
        this.hooks.onState("online");
        this._schedulePing();
        this._scheduleAuth(frame.expires_at);
        this.queryPresence();
        this.hooks.onResumed(frame);
        if (this.pendingCatchUp.length) {
          this.hooks.onCatchUp(this.pendingCatchUp.splice(0));
        }
        break;
      case "catch_up":
        this.pendingCatchUp.push(frame);
        if (this.ready) this.hooks.onCatchUp(this.pendingCatchUp.splice(0));
        break;
      case "resumed":
        // The gateway repaired its own stream from PostgreSQL after a break
        // in its Pub/Sub link: the repaired messages arrive as events
        // (duplicates are dropped), but edits and read positions published
        // during the break must be fetched, as after a reconnect.
        this.hooks.onResumed(frame);
        break;
      case "authed":
        this._scheduleAuth(frame.expires_at);
        break;
      case "pong":
        clearTimeout(this.pongTimer);
        break;
      case "presence":
        this.hooks.onPresence(frame);
        break;
      case "presence.state":
        for (const user of frame.users || []) this.hooks.onPresence(user);
        break;
      case "left":
        // Removed from a conversation: the membership event updates the list.
        break;
      case "error":
        console.warn("gateway error frame", frame.code, frame.detail);
        break;
      default:
        break; // newer gateways may add ops
    }
  }

  _onClose(code, reason) {
    this._clearTimers();
    this.socket = null;
    this.ready = false;
    this.pendingCatchUp = [];
    if (!this.running) return;
    if (code === CLOSE_AUTH_FAILED || code === CLOSE_TOKEN_EXPIRED) this.renewToken = true;
    if (reason) console.info("gateway closed", code, reason);
    this.hooks.onState(navigator.onLine ? "reconnecting" : "offline");
    // Too many sockets for this user: back off longer before trying again.
    const slow = code === CLOSE_TOO_MANY_CONNECTIONS ? 10 : 1;
    this.attempt += 1;
    const backoff = Math.min(BACKOFF_FIRST_MS * 2 ** (this.attempt - 1) * slow, BACKOFF_MAX_MS);
    // Jitter spreads reconnects after a gateway restart over time.
    this._reconnectSoon(backoff / 2 + Math.random() * (backoff / 2));
  }

  _reconnectSoon(delayMs) {
    if (!this.running || this.socket) return;
    clearTimeout(this.retryTimer);
    if (!navigator.onLine) {
      this.hooks.onState("offline");
      return; // the "online" event reconnects
    }
    this.retryTimer = setTimeout(() => this._connect(), delayMs);
  }

  _drop(why) {
    if (!this.socket) {
      if (why === "offline") this.hooks.onState("offline");
      return;
    }
    const socket = this.socket;
    // Forget it first: its close event may come late (or never, offline).
    this.socket = null;
    socket.close(4000, why);
    this._onClose(1006, why);
  }

  _closeSocket(code, reason) {
    this._clearTimers();
    const socket = this.socket;
    this.socket = null;
    if (socket) socket.close(code, reason);
  }

  _send(frame) {
    if (this.socket && this.socket.readyState === WebSocket.OPEN) {
      this.socket.send(JSON.stringify(frame));
      return true;
    }
    return false;
  }

  _schedulePing() {
    clearTimeout(this.pingTimer);
    this.pingTimer = setTimeout(() => {
      if (!this._send({ op: "ping", id: Date.now() })) return;
      this.pongTimer = setTimeout(() => this._drop("no pong"), PONG_WITHIN_MS);
      this._schedulePing();
    }, PING_EVERY_MS);
  }

  /** Before the access token expires, renew it and hand the fresh one to the socket. */
  _scheduleAuth(expiresAt) {
    clearTimeout(this.authTimer);
    if (!expiresAt) return;
    const expiresMs = expiresAt > 1e12 ? expiresAt : expiresAt * 1000; // seconds or ms
    const due = Math.max(expiresMs - Date.now() - REFRESH_BEFORE_EXPIRY_MS, 5000);
    this.authTimer = setTimeout(async () => {
      try {
        await this.hooks.refresh();
        this._send({ op: "auth", token: this.hooks.token() });
      } catch {
        // The gateway closes with 4003 when the token expires; we renew then.
      }
    }, due);
  }

  _clearTimers() {
    clearTimeout(this.pingTimer);
    clearTimeout(this.pongTimer);
    clearTimeout(this.authTimer);
  }
}
