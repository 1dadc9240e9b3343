// The reference web client: the screens and what happens on each action.
//
// How the pieces fit (docs/web-client.md explains it for client developers):
//
//   api.js       HTTP calls, tokens, refresh rotation, problem errors
//   gateway.js   the one WebSocket: auth, resume from positions, reconnect
//   timeline.js  one conversation's messages: dedupe by seq, gap detection
//   app.js       this file: state, rendering, user actions
//
// The order of truth: the HTTP API is where the client writes and where it
// reads pages of history; the gateway pushes what happens afterwards. After
// any disconnect the gateway replays from the positions the client sends, so
// the screen converges on what the server stored — never more, never less.

import { Api, ApiError } from "./api.js";
import { Gateway, gatewayUrl } from "./gateway.js";
import { Timeline, newClientMsgId } from "./timeline.js";

const HISTORY_PAGE = 50; // messages per history request
const TYPING_SEND_EVERY_MS = 3000; // at most one "I am typing" per conversation per 3 s
const TYPING_SHOWN_MS = 6000; // how long a received typing signal stays on screen
const SEND_RETRIES = 8; // a send retried with the same client_msg_id this many times

const $ = (id) => document.getElementById(id);

// --- state ---------------------------------------------------------------

const state = {
  conversations: new Map(), // id -> Conversation (below)
  users: new Map(), // user id -> {id, username, display_name}, names of senders
  presence: new Map(), // user id -> {online, last_seen}
  openId: null, // the conversation shown, or null
  typingSentAt: new Map(), // conversation id -> when we last told others we type
  typingAfterSend: new Set(), // conversation ids where we sent a message since that
  typingShown: new Map(), // conversation id -> Map(user id -> timer) of people typing
  receiptTimer: null, // debounce of POST /v1/receipts
};

/**
 * What the client keeps per conversation: the summary from the list and a
 * Timeline. `readers` holds the other members' read positions (receipts).
 */
function conversationFrom(summary, existing) {
  const conversation = existing || {
    id: summary.id,
    timeline: new Timeline(summary.id, lastSeqOf(summary)),
    readers: new Map(), // user id -> read_seq
    historyLoaded: false, // the latest page was fetched once
    members: [],
    // Edits and deletions carry no seq; this edit position (the newest
    // edit_seq applied) lets POST /v1/sync return those made while away.
    editCursor: summary.last_edit_seq ?? 0,
  };
  conversation.kind = summary.kind;
  conversation.title = summary.title || null;
  conversation.membership = summary.membership || "member"; // "left": read-only
  conversation.unread = summary.unread_count ?? conversation.unread ?? 0;
  conversation.lastMessage = summary.last_message || conversation.lastMessage || null;
  conversation.lastActivityAt = summary.last_activity_at || conversation.lastActivityAt || "";
  if (summary.members) conversation.members = summary.members;
  if (summary.peer) conversation.peer = summary.peer;
  // Members (with read positions) come with GET /v1/conversations/{id}.
  for (const member of conversation.members) {
    rememberUser({ id: member.user_id, username: member.username, display_name: member.display_name });
    if (member.user_id !== me().id) {
      const before = conversation.readers.get(member.user_id) || 0;
      conversation.readers.set(member.user_id, Math.max(before, member.read_seq));
    }
  }
  if (conversation.peer) rememberUser(conversation.peer);
  return conversation;
}

function lastSeqOf(summary) {
  if (summary.last_seq !== undefined) return summary.last_seq;
  return summary.last_message ? summary.last_message.seq : 0;
}

function rememberUser(user) {
  if (user && user.id !== undefined) state.users.set(user.id, user);
}

function me() {
  return api.user || { id: -1 };
}

// --- the two connections ---------------------------------------------------

const api = new Api("", (session) => {
  if (!session) showSignedOut();
});

const gateway = new Gateway({
  url: gatewayUrl(),
  // Always the current token: after a refresh the next (re)connect uses the new one.
  token: () => api.accessToken,
  refresh: () => api.refreshOnce(),
  // Resume positions: for each conversation, the seq up to which nothing is missing.
  positions: () => {
    const positions = {};
    for (const conversation of state.conversations.values()) {
      positions[conversation.id] = conversation.timeline.high;
    }
    return positions;
  },
  onEvent: (event) => handleEvent(event),
  onState: (connection) => showConnection(connection),
  onResumed: () => onResumed(),
  onCatchUp: (ranges) => catchUp(ranges).catch(() => {}),
  onTyping: (typing) => showTyping(typing),
  onPresence: (presence) => updatePresence(presence),
});

// --- signing in and out ----------------------------------------------------

function showSignedOut() {
  gateway.stop();
  // Nothing of the last person may stay on screen for the next one.
  state.conversations.clear();
  state.users.clear();
  state.presence.clear();
  state.openId = null;
  $("conversation-list").replaceChildren();
  $("message-list").replaceChildren();
  $("conversation-title").textContent = "No conversation open";
  $("conversation-subtitle").textContent = "";
  $("typing").textContent = "";
  $("composer").hidden = true;
  $("add-member").hidden = true;
  $("empty-hint").hidden = false;
  $("chat-view").classList.remove("show-conversation");
  $("chat-view").hidden = true;
  $("auth-view").hidden = false;
  $("login-username").focus();
}

async function showSignedIn() {
  $("auth-view").hidden = true;
  $("chat-view").hidden = false;
  $("me").textContent = `${me().display_name} (@${me().username})`;
  // The list first: its last seqs are the positions the socket resumes from,
  // so nothing sent between the two calls is missed.
  await withError($("sidebar-error"), loadConversations);
  gateway.start();
}

$("login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = event.target;
  await withError($("auth-error"), async () => {
    await api.login(form.username.value.trim(), form.password.value);
    form.reset();
    await showSignedIn();
  });
});

$("register-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = event.target;
  await withError($("auth-error"), async () => {
    await api.register(form.username.value.trim(), form.display_name.value.trim(), form.password.value);
    form.reset();
    await showSignedIn();
  });
});

$("logout").addEventListener("click", async () => {
  gateway.stop();
  await api.logout(); // the session callback shows the signed-out view
});

// --- the conversation list ---------------------------------------------------

// Many events ask for the list at once (a replay of a new conversation, a
// membership change): at most one request runs and one waits. A caller that
// joins the waiting one gets an answer read after its call.
let listRunning = Promise.resolve();
let listWaiting = null;

function loadConversations() {
  if (!listWaiting) {
    listWaiting = listRunning.then(() => {
      listWaiting = null;
      return fetchConversations();
    });
    listRunning = listWaiting.catch(() => {});
  }
  return listWaiting;
}

async function fetchConversations() {
  const answer = await api.request("GET", "/v1/conversations");
  for (const summary of answer.conversations) {
    const existing = state.conversations.get(summary.id);
    state.conversations.set(summary.id, conversationFrom(summary, existing));
  }
  renderConversationList();
}

function conversationName(conversation) {
  if (conversation.title) return conversation.title;
  const peer = peerOf(conversation);
  if (peer) return peer.display_name || peer.username;
  return conversation.kind === "group" ? "Group" : "Direct chat";
}

/** The other person of a direct conversation, when known. */
function peerOf(conversation) {
  if (conversation.kind !== "direct") return null;
  return conversation.peer || null;
}

function previewOf(message) {
  if (!message) return "";
  if (message.deleted) return "Message deleted";
  if (message.kind === "system") return systemText(message);
  if (message.attachment && !message.text) return `File: ${message.attachment.file_name}`;
  return message.text || "";
}

function sortedConversations() {
  const newest = (c) => {
    const last = c.timeline.last();
    const seen = last ? last.created_at : "";
    return seen > (c.lastActivityAt || "") ? seen : c.lastActivityAt || "";
  };
  return [...state.conversations.values()].sort((a, b) => (newest(a) < newest(b) ? 1 : -1));
}

function renderConversationList() {
  const list = $("conversation-list");
  const focusedId = document.activeElement && document.activeElement.dataset.conversationId;
  list.replaceChildren();
  for (const conversation of sortedConversations()) {
    const item = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.dataset.conversationId = String(conversation.id);
    button.setAttribute("aria-current", String(conversation.id === state.openId));
    const peer = peerOf(conversation);
    const online = peer ? Boolean(state.presence.get(peer.id)?.online) : false;
    const dot = element("span", "presence");
    dot.dataset.online = String(online);
    dot.dataset.shown = String(Boolean(peer)); // presence is for direct chats only
    dot.setAttribute("aria-hidden", "true");
    const name = element("span", "name", conversationName(conversation));
    const unread = element("span", "unread", conversation.unread ? String(conversation.unread) : "");
    const last = conversation.timeline.last() || conversation.lastMessage;
    const preview = element("span", "preview", previewOf(last));
    button.append(dot, name, unread, preview);
    // One sentence for screen readers instead of four fragments.
    const parts = [conversationName(conversation)];
    if (peer) parts.push(online ? "online" : "offline");
    if (conversation.unread) parts.push(`${conversation.unread} unread`);
    button.setAttribute("aria-label", parts.join(", "));
    button.addEventListener("click", () => openConversation(conversation.id));
    item.append(button);
    list.append(item);
    if (focusedId === String(conversation.id)) button.focus();
  }
}

$("direct-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = event.target;
  await withError($("sidebar-error"), async () => {
    const summary = await api.request("POST", "/v1/conversations/direct", {
      body: { username: form.username.value.trim() },
    });
    form.reset();
    const conversation = conversationFrom(summary, state.conversations.get(summary.id));
    state.conversations.set(summary.id, conversation);
    renderConversationList();
    await openConversation(summary.id);
  });
});

// --- groups ----------------------------------------------------------------------

$("new-group").addEventListener("click", () => {
  $("group-error").textContent = "";
  $("group-dialog").showModal();
});
$("group-cancel").addEventListener("click", () => $("group-dialog").close());

$("group-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = event.target;
  const usernames = form.members.value.split(",").map((s) => s.trim()).filter(Boolean);
  await withError($("group-error"), async () => {
    const group = await api.request("POST", "/v1/groups", {
      body: { title: form.title.value.trim(), usernames },
    });
    form.reset();
    $("group-dialog").close();
    state.conversations.set(group.id, conversationFrom(group, state.conversations.get(group.id)));
    renderConversationList();
    await openConversation(group.id);
  });
});

$("add-member").addEventListener("click", () => {
  $("member-error").textContent = "";
  $("member-dialog").showModal();
});
$("member-cancel").addEventListener("click", () => $("member-dialog").close());

$("member-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = event.target;
  const conversation = state.conversations.get(state.openId);
  if (!conversation) return;
  await withError($("member-error"), async () => {
    await api.request("POST", `/v1/groups/${conversation.id}/members`, {
      body: { username: form.username.value.trim() },
    });
    form.reset();
    $("member-dialog").close();
    await refreshConversation(conversation.id);
  });
});

// --- the open conversation ---------------------------------------------------------

async function openConversation(conversationId) {
  state.openId = conversationId;
  const conversation = state.conversations.get(conversationId);
  $("chat-view").classList.add("show-conversation");
  $("empty-hint").hidden = true;
  $("composer-error").textContent = "";
  $("message-list").replaceChildren();
  renderHeader(conversation);
  renderConversationList();
  renderTyping();
  if (conversation.kind === "direct") gateway.queryPresence(); // a new contact, perhaps
  if (!conversation.historyLoaded) {
    await withError($("composer-error"), () => loadLatest(conversation));
  }
  if (state.openId !== conversationId) return; // another one was opened meanwhile
  renderMessages(conversation);
  scrollToBottom();
  await refreshConversation(conversationId);
  markRead(conversation);
  $("composer-text").focus();
}

/** Members and read positions of one conversation (GET /v1/conversations/{id}). */
async function refreshConversation(conversationId) {
  const detail = await api.request("GET", `/v1/conversations/${conversationId}`).catch(() => null);
  if (!detail) return;
  const conversation = conversationFrom(detail, state.conversations.get(conversationId));
  state.conversations.set(conversationId, conversation);
  if (state.openId === conversationId) {
    renderHeader(conversation);
    renderMessages(conversation); // system messages name members we may only know now
  }
  renderConversationList();
}

function renderHeader(conversation) {
  const member = conversation.membership !== "left";
  $("conversation-title").textContent = conversationName(conversation);
  $("add-member").hidden = conversation.kind !== "group" || !member;
  $("conversation-subtitle").textContent = member ? subtitleOf(conversation) : "You left this group";
  $("composer").hidden = !member; // a former member keeps what they saw, read-only
}

function subtitleOf(conversation) {
  if (conversation.kind === "group") {
    const names = conversation.members.map((m) => displayName(m.user_id));
    return names.length ? names.join(", ") : "";
  }
  const peer = peerOf(conversation);
  if (!peer) return "";
  const presence = state.presence.get(peer.id);
  if (presence?.online) return "online";
  if (presence?.last_seen) return `last seen ${formatTime(presence.last_seen)}`;
  return `@${peer.username || ""}`;
}

$("back").addEventListener("click", () => {
  $("chat-view").classList.remove("show-conversation");
  state.openId = null;
  renderConversationList();
  const button = document.querySelector("#conversation-list button");
  if (button) button.focus();
});

// --- history ---------------------------------------------------------------------

/** The newest page of a conversation (GET /v1/history/{id}, no cursor). */
async function loadLatest(conversation) {
  const page = await api.request("GET", `/v1/history/${conversation.id}`, {
    query: { limit: HISTORY_PAGE },
  });
  acceptPage(conversation, page);
  conversation.historyLoaded = true;
  // The newest page ends at the newest seq we may see: up to date by definition.
  conversation.timeline.filledUpTo(page.last_seq);
  if (!page.has_more) conversation.timeline.reachedStart = true;
}

/** One page older than what is held (scrolling up). */
async function loadEarlier(conversation) {
  const timeline = conversation.timeline;
  if (timeline.reachedStart || timeline.low === null || timeline.low <= 1) {
    timeline.reachedStart = true;
    return;
  }
  const page = await api.request("GET", `/v1/history/${conversation.id}`, {
    query: { before_seq: timeline.low, limit: HISTORY_PAGE },
  });
  if (!page.has_more || page.messages.length === 0) timeline.reachedStart = true;
  const list = $("messages");
  const fromBottom = list.scrollHeight - list.scrollTop;
  acceptPage(conversation, page);
  if (state.openId === conversation.id) {
    renderMessages(conversation);
    list.scrollTop = list.scrollHeight - fromBottom; // keep the reader's place
  }
}

/**
 * Fill a gap: fetch every message after `high` up to the one that revealed
 * the gap. Empty answers mean the seqs are not ours to see (e.g. before we
 * joined), which closes the gap too.
 */
async function fillGap(conversation) {
  const timeline = conversation.timeline;
  let target = timeline.missingAfter();
  while (target !== null && target > timeline.high + 1) {
    const page = await api.request("GET", `/v1/history/${conversation.id}`, {
      query: { after_seq: timeline.high, limit: HISTORY_PAGE },
    });
    acceptPage(conversation, page);
    const reached = page.messages.reduce((top, m) => Math.max(top, m.seq), timeline.high);
    // No more after this page: every seq below the target is known (or not ours).
    timeline.filledUpTo(page.has_more ? reached : target - 1);
    target = timeline.missingAfter();
  }
  if (state.openId === conversation.id) renderMessages(conversation);
}

function acceptPage(conversation, page) {
  for (const message of page.messages) conversation.timeline.accept(message);
}

$("load-earlier").addEventListener("click", () => {
  const conversation = state.conversations.get(state.openId);
  if (conversation) withError($("composer-error"), () => loadEarlier(conversation));
});

$("messages").addEventListener("scroll", () => {
  const conversation = state.conversations.get(state.openId);
  if (conversation && $("messages").scrollTop < 40 && !conversation.loadingEarlier) {
    conversation.loadingEarlier = true;
    loadEarlier(conversation)
      .catch(() => {})
      .finally(() => {
        conversation.loadingEarlier = false;
      });
  }
});

// --- rendering messages --------------------------------------------------------------

function renderMessages(conversation) {
  const list = $("message-list");
  const atBottom = isAtBottom();
  list.replaceChildren();
  for (const message of conversation.timeline.ordered()) list.append(messageItem(conversation, message));
  for (const [clientMsgId, pending] of conversation.timeline.pending) {
    list.append(pendingItem(clientMsgId, pending));
  }
  $("load-earlier").hidden = conversation.timeline.reachedStart;
  renderReceipts(conversation);
  if (atBottom) scrollToBottom();
}

/** Add or replace one message in place (ordered by seq) without redrawing the list. */
function renderOne(conversation, message) {
  const list = $("message-list");
  const atBottom = isAtBottom();
  const item = messageItem(conversation, message);
  const existing = document.getElementById(item.id);
  if (existing) {
    existing.replaceWith(item);
  } else {
    const pending = message.client_msg_id && document.getElementById(`pending-${message.client_msg_id}`);
    if (pending) pending.remove();
    let before = null;
    for (const child of list.children) {
      const seq = Number(child.dataset.seq);
      if (!child.dataset.seq || seq > message.seq) {
        before = child;
        break;
      }
    }
    list.insertBefore(item, before);
  }
  renderReceipts(conversation);
  if (atBottom || message.sender_id === me().id) scrollToBottom();
}

function messageItem(conversation, message) {
  const item = document.createElement("li");
  item.id = `m-${message.conversation_id}-${message.seq}`;
  item.dataset.seq = String(message.seq);
  item.className = "message";
  if (message.kind === "system") {
    item.classList.add("system");
    item.textContent = systemText(message);
    return item;
  }
  const mine = message.sender_id === me().id;
  if (mine) item.classList.add("mine");
  if (conversation.kind === "group" && !mine) {
    item.append(element("div", "sender", displayName(message.sender_id)));
  }
  if (message.deleted) {
    item.append(element("div", "deleted", "This message was deleted"));
  } else {
    if (message.attachment) item.append(attachmentView(message.attachment));
    if (message.text) item.append(element("div", "text", message.text));
  }
  const meta = element("div", "meta", formatTime(message.created_at));
  if (message.edited_at && !message.deleted) meta.textContent += " · edited";
  if (mine) {
    const receipt = element("span", "receipt", "");
    receipt.dataset.seq = String(message.seq);
    meta.append(" · ", receipt);
  }
  item.append(meta);
  return item;
}

function pendingItem(clientMsgId, pending) {
  const item = document.createElement("li");
  item.id = `pending-${clientMsgId}`;
  item.className = `message mine pending${pending.failed ? " failed" : ""}`;
  item.append(element("div", "text", pending.label));
  item.append(element("div", "meta", pending.failed ? "Not sent — will retry" : "Sending…"));
  return item;
}

/**
 * An attachment: images inline, other files (PDF) as a link. The address is a
 * short-lived presigned GET from GET /v1/attachments/{id}; fetch it when shown.
 */
function attachmentView(attachment) {
  const wrapper = element("div", "attachment");
  if (attachment.content_type.startsWith("image/")) {
    const image = document.createElement("img");
    image.alt = attachment.file_name;
    image.dataset.attachmentId = attachment.id;
    wrapper.append(image);
    downloadUrl(attachment.id).then((url) => {
      if (url) image.src = url;
    });
  } else {
    const link = document.createElement("a");
    const kind = attachment.content_type === "application/pdf" ? "PDF" : "File";
    link.textContent = `${kind}: ${attachment.file_name} (${formatSize(attachment.size_bytes)})`;
    link.href = "#";
    link.target = "_blank";
    link.rel = "noopener";
    link.dataset.attachmentId = attachment.id;
    downloadUrl(attachment.id).then((url) => {
      if (url) link.href = url;
    });
    wrapper.append(link);
  }
  return wrapper;
}

async function downloadUrl(attachmentId) {
  try {
    const answer = await api.request("GET", `/v1/attachments/${attachmentId}`);
    return answer.url;
  } catch {
    return null;
  }
}

function systemText(message) {
  const event = message.system || {};
  const who = (id) => displayName(id);
  switch (event.type || event.event) {
    case "group.created":
      return `${who(event.actor_id ?? message.sender_id)} created the group${event.title ? ` “${event.title}”` : ""}`;
    case "member.added":
      return `${who(event.actor_id)} added ${who(event.user_id)}`;
    case "member.removed":
      return event.actor_id === event.user_id ? `${who(event.user_id)} left` : `${who(event.actor_id)} removed ${who(event.user_id)}`;
    case "member.role_changed":
      return `${who(event.user_id)} is now ${event.role}`;
    case "group.updated":
      return event.title
        ? `${who(event.actor_id)} named the group “${event.title}”`
        : `${who(event.actor_id)} updated the group`;
    default:
      return message.text || "Group updated";
  }
}

/** "Read" on my messages that every other member has read up to, else "Sent". */
function renderReceipts(conversation) {
  if (state.openId !== conversation.id) return;
  const positions = [...conversation.readers.values()];
  const readByAll = positions.length ? Math.min(...positions) : 0;
  for (const receipt of document.querySelectorAll("#message-list .receipt")) {
    const read = Number(receipt.dataset.seq) <= readByAll;
    receipt.textContent = read ? "✓✓ Read" : "✓ Sent";
    receipt.dataset.read = String(read);
  }
}

function displayName(userId) {
  if (userId === me().id) return "You";
  const user = state.users.get(userId);
  return user ? user.display_name || user.username : `User ${userId}`;
}

// --- sending -----------------------------------------------------------------------------

$("composer").addEventListener("submit", async (event) => {
  event.preventDefault();
  const conversation = state.conversations.get(state.openId);
  const input = $("composer-text");
  const text = input.value.trim();
  if (!conversation || !text) return;
  input.value = "";
  $("composer-error").textContent = "";
  // The message ends "typing" on the other screens; the next keystroke starts
  // it again, as soon as the gateway's own rate limit allows (limits in `ready`).
  state.typingAfterSend.add(conversation.id);
  await sendMessage(conversation, { text });
});

$("composer-text").addEventListener("input", () => {
  const conversationId = state.openId;
  if (!conversationId || !$("composer-text").value) return;
  const last = state.typingSentAt.get(conversationId) || 0;
  // While typing on: one signal per 3 s. Right after a send: as soon as the
  // gateway accepts another (it drops signals closer than its interval).
  const every = state.typingAfterSend.has(conversationId)
    ? gateway.typingIntervalMs + 100
    : TYPING_SEND_EVERY_MS;
  if (Date.now() - last < every) return;
  state.typingSentAt.set(conversationId, Date.now());
  state.typingAfterSend.delete(conversationId);
  gateway.sendTyping(conversationId);
});

$("composer-file").addEventListener("change", async (event) => {
  const file = event.target.files[0];
  event.target.value = "";
  const conversation = state.conversations.get(state.openId);
  if (!file || !conversation) return;
  $("composer-error").textContent = "";
  const text = $("composer-text").value.trim();
  $("composer-text").value = "";
  await sendMessage(conversation, { text, file });
});

/**
 * Send one message. It shows at once as "Sending…" under a fresh
 * client_msg_id; every retry reuses that id, so a send whose answer was lost
 * is never stored twice (the server answers 200 with the original).
 */
async function sendMessage(conversation, { text, file }) {
  const clientMsgId = newClientMsgId();
  const pending = { label: file ? `File: ${file.name}${text ? ` — ${text}` : ""}` : text, failed: false };
  conversation.timeline.pending.set(clientMsgId, pending);
  if (state.openId === conversation.id) {
    $("message-list").append(pendingItem(clientMsgId, pending));
    scrollToBottom();
  }
  try {
    const body = { conversation_id: conversation.id, client_msg_id: clientMsgId };
    if (text) body.text = text;
    if (file) body.attachment_id = await uploadFile(conversation, file);
    const message = await withRetries(() => api.request("POST", "/v1/messages", { body }), () => {
      pending.failed = true;
      redrawPending(clientMsgId, pending);
    });
    receiveMessage(message);
  } catch (error) {
    conversation.timeline.pending.delete(clientMsgId);
    document.getElementById(`pending-${clientMsgId}`)?.remove();
    $("composer-error").textContent = `Not sent: ${error.message}`;
  }
}

function redrawPending(clientMsgId, pending) {
  const existing = document.getElementById(`pending-${clientMsgId}`);
  if (existing) existing.replaceWith(pendingItem(clientMsgId, pending));
}

/** Retry a call while the failure is temporary (network, 503, 429), with backoff. */
async function withRetries(call, onRetry) {
  for (let attempt = 0; ; attempt += 1) {
    try {
      return await call();
    } catch (error) {
      if (!(error instanceof ApiError) || !error.retryable || attempt >= SEND_RETRIES) throw error;
      onRetry();
      const hinted = error.problem.retry_after ? error.problem.retry_after * 1000 : 0;
      const backoff = Math.max(hinted, Math.min(500 * 2 ** attempt, 8000));
      // Offline: wait for the network to come back rather than for the clock.
      await (navigator.onLine ? sleep(backoff) : untilOnline(30000));
    }
  }
}

/**
 * Upload a file straight to object storage (docs/files.md):
 * 1. POST /v1/uploads declares name, type and size; the answer is a presigned
 *    POST (url + form fields) whose policy enforces exactly those.
 * 2. The browser POSTs the form fields and the file to that url — the bytes
 *    never pass through a function.
 * 3. POST /v1/uploads/{id}/complete lets the server check the object and
 *    record the attachment; its id then goes into the message.
 */
async function uploadFile(conversation, file) {
  const upload = await api.request("POST", "/v1/uploads", {
    body: {
      conversation_id: conversation.id,
      file_name: file.name,
      content_type: file.type || "application/octet-stream",
      size_bytes: file.size,
    },
  });
  const form = new FormData();
  for (const [name, value] of Object.entries(upload.fields)) form.append(name, value);
  form.append("file", file); // the file must be the last field of an S3 POST
  let response;
  try {
    response = await fetch(upload.url, { method: "POST", body: form });
  } catch {
    throw new ApiError(0, { code: "network-error", title: "The file could not be uploaded" });
  }
  if (!response.ok) {
    throw new ApiError(response.status, { title: `The storage refused the file (HTTP ${response.status})` });
  }
  // complete_url is the API path of step 3 (/v1/uploads/{upload_id}/complete).
  const attachment = await api.request("POST", upload.complete_url);
  return attachment.id;
}

// --- receiving -----------------------------------------------------------------------------

/**
 * Every message, from wherever it came, goes through here: the Timeline
 * drops copies, reports gaps, and only new or changed messages reach the screen.
 */
function receiveMessage(message) {
  const conversation = state.conversations.get(message.conversation_id);
  if (!conversation) {
    // A conversation we do not know yet (someone started it): fetch the list.
    loadConversations()
      .then(() => {
        if (state.conversations.has(message.conversation_id)) receiveMessage(message);
      })
      .catch(() => {}); // the next event or reconnect loads the list again
    return;
  }
  // Messages up to the position were already counted in the list's unread_count.
  const position = conversation.timeline.high;
  const outcome = conversation.timeline.accept(message);
  if (outcome === "duplicate") return;
  const isOpen = state.openId === conversation.id;
  // The server moves a sender's read position to their own message without a
  // read.updated event: whoever writes has read everything before.
  if (message.sender_id !== null && message.sender_id !== me().id) {
    const before = conversation.readers.get(message.sender_id) || 0;
    conversation.readers.set(message.sender_id, Math.max(before, message.seq));
  }
  if ((outcome === "added" || outcome === "gap") && message.seq > position) {
    // Counted like the server's unread_count: every message not sent by me
    // (system messages too), so a reload shows the same number.
    const fromOthers = message.sender_id !== me().id;
    if (fromOthers && !(isOpen && document.visibilityState === "visible")) conversation.unread += 1;
    clearTyping(conversation.id, message.sender_id);
  }
  if (isOpen) {
    renderOne(conversation, message);
    markRead(conversation);
  }
  renderConversationList();
  if (outcome === "gap") fillGap(conversation).catch(() => {});
}

/** One event from the gateway (the envelope of docs/events.md). */
function handleEvent(event) {
  const data = event.data || {};
  switch (event.type) {
    case "message.created":
      receiveMessage(data.message || data);
      break;
    case "message.edited":
    case "message.deleted": {
      const conversation = state.conversations.get(event.conversation_id);
      if (conversation) applyEdit(conversation, data.message || data, data.edit_seq);
      break;
    }
    case "read.updated": {
      const conversation = state.conversations.get(event.conversation_id);
      if (!conversation) break;
      if (data.user_id === me().id) {
        // Read on another of my devices: nothing unread here either.
        if (data.read_seq >= (conversation.timeline.last()?.seq ?? 0)) conversation.unread = 0;
        renderConversationList();
      } else {
        const before = conversation.readers.get(data.user_id) || 0;
        conversation.readers.set(data.user_id, Math.max(before, data.read_seq));
        renderReceipts(conversation);
      }
      break;
    }
    case "group.created":
    case "conversation.created":
    case "group.updated":
    case "member.added":
    case "member.removed":
    case "member.role_changed": {
      // Membership changed: the list (and members) are re-read; a system
      // message, if any, arrives as its own message.created.
      const id = event.conversation_id ?? data.conversation_id;
      loadConversations()
        .then(() => id && state.conversations.has(id) && refreshConversation(id))
        .catch(() => {});
      if (data.message) receiveMessage(data.message);
      break;
    }
    default:
      break; // unknown event types are ignored: newer servers may add some
  }
}

/** An edited or deleted message (live event or sync answer) replaces its copy. */
function applyEdit(conversation, message, editSeq) {
  if (editSeq) conversation.editCursor = Math.max(conversation.editCursor || 0, editSeq);
  if (conversation.timeline.accept(message) !== "duplicate") {
    if (state.openId === conversation.id) {
      renderOne(conversation, conversation.timeline.messages.get(message.seq));
    }
    renderConversationList();
  }
}

/** After every (re)connect and replay: pick up conversations created meanwhile,
 * and the edits, deletions and read positions published while we were away
 * (they have no seq, so the gateway's replay does not carry them). */
function onResumed() {
  loadConversations().catch(() => {});
  syncEdits().catch(() => {});
}

/**
 * POST /v1/sync with our edit positions: each conversation answers the
 * messages edited or deleted after it (in edit order) and where to continue.
 * Our seq positions go along too, so the missed-messages part stays empty
 * (the gateway already replayed those).
 */
async function syncEdits() {
  // More than a page of edits in a conversation: ask again from the new
  // cursor (bounded, in case the other side keeps editing).
  for (let round = 0; round < 10; round += 1) {
    const more = await syncEditsOnce();
    if (!more) return;
  }
}

async function syncEditsOnce() {
  const positions = {};
  const editPositions = {};
  for (const conversation of state.conversations.values()) {
    if (conversation.membership === "left") continue;
    positions[conversation.id] = conversation.timeline.high;
    editPositions[conversation.id] = conversation.editCursor || 0;
  }
  if (!Object.keys(positions).length) return false;
  const answer = await api.request("POST", "/v1/sync", {
    body: { positions, edit_positions: editPositions },
  });
  for (const change of answer.conversations) {
    const conversation = state.conversations.get(change.conversation.id);
    if (!conversation) continue;
    for (const message of change.messages) receiveMessage(message);
    for (const message of change.edits) applyEdit(conversation, message, 0);
    conversation.editCursor = Math.max(conversation.editCursor || 0, change.edit_cursor);
    for (const reader of change.read_positions || []) {
      if (reader.user_id === me().id) continue;
      const before = conversation.readers.get(reader.user_id) || 0;
      conversation.readers.set(reader.user_id, Math.max(before, reader.read_seq));
    }
    if (state.openId === conversation.id) renderReceipts(conversation);
  }
  return answer.conversations.some((change) => change.edits_has_more);
}

/**
 * The gateway says we are too far behind in some conversations to replay
 * (`catch_up` frames): start those timelines afresh from the newest page of
 * history; older messages load on scrolling up, like on first open.
 */
async function catchUp(ranges) {
  for (const range of ranges) {
    const conversation = state.conversations.get(range.conversation_id);
    if (!conversation) continue;
    conversation.historyLoaded = false;
    conversation.timeline = new Timeline(conversation.id, range.up_to_seq);
    if (state.openId === conversation.id) {
      await loadLatest(conversation);
      renderMessages(conversation);
    }
  }
  await loadConversations(); // unread counts and previews as the server has them
}

// --- read receipts -----------------------------------------------------------------------------

/**
 * Tell the server what I have read: the newest seq of the open conversation,
 * while the page is visible, at most every 500 ms (POST /v1/receipts).
 */
function markRead(conversation) {
  if (document.visibilityState !== "visible" || state.openId !== conversation.id) return;
  clearTimeout(state.receiptTimer);
  state.receiptTimer = setTimeout(async () => {
    const last = conversation.timeline.last();
    if (!last || (conversation.readSent || 0) >= last.seq) {
      conversation.unread = 0;
      renderConversationList();
      return;
    }
    try {
      await api.request("POST", "/v1/receipts", {
        body: { conversation_id: conversation.id, seq: last.seq },
      });
      conversation.readSent = last.seq;
      conversation.unread = 0;
      renderConversationList();
    } catch {
      // Not fatal: the next message or visit tries again.
    }
  }, 500);
}

document.addEventListener("visibilitychange", () => {
  const conversation = state.conversations.get(state.openId);
  if (conversation) markRead(conversation);
});

// --- typing and presence --------------------------------------------------------------------

function showTyping({ conversation_id: conversationId, user_id: userId, typing = true }) {
  if (userId === me().id) return;
  if (!typing) {
    clearTyping(conversationId, userId);
    return;
  }
  let people = state.typingShown.get(conversationId);
  if (!people) state.typingShown.set(conversationId, (people = new Map()));
  clearTimeout(people.get(userId));
  people.set(userId, setTimeout(() => clearTyping(conversationId, userId), TYPING_SHOWN_MS));
  renderTyping();
}

function clearTyping(conversationId, userId) {
  const people = state.typingShown.get(conversationId);
  if (!people || !people.has(userId)) return;
  clearTimeout(people.get(userId));
  people.delete(userId);
  renderTyping();
}

function renderTyping() {
  const people = state.typingShown.get(state.openId);
  const names = people ? [...people.keys()].map(displayName) : [];
  $("typing").textContent =
    names.length === 0 ? "" : names.length === 1 ? `${names[0]} is typing…` : `${names.join(", ")} are typing…`;
}

function updatePresence({ user_id: userId, online, last_seen: lastSeen }) {
  state.presence.set(userId, { online, last_seen: lastSeen });
  renderConversationList();
  const conversation = state.conversations.get(state.openId);
  if (conversation) $("conversation-subtitle").textContent = subtitleOf(conversation);
}

// --- connection status -------------------------------------------------------------------------

function showConnection(connection) {
  const labels = {
    connecting: "Connecting…",
    online: "Online",
    reconnecting: "Reconnecting…",
    offline: "Offline",
  };
  const badge = $("connection");
  badge.dataset.state = connection;
  badge.textContent = labels[connection];
}

// --- small helpers ---------------------------------------------------------------------------

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function isAtBottom() {
  const box = $("messages");
  return box.scrollHeight - box.scrollTop - box.clientHeight < 60;
}

function scrollToBottom() {
  const box = $("messages");
  box.scrollTop = box.scrollHeight;
}

function formatTime(iso) {
  const when = new Date(iso);
  if (Number.isNaN(when.getTime())) return "";
  return when.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

function formatSize(bytes) {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(0)} KB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MB`;
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Resolves when the browser is back online, or after `ms` at the latest. */
function untilOnline(ms) {
  return new Promise((resolve) => {
    const done = () => {
      window.removeEventListener("online", done);
      clearTimeout(timer);
      resolve();
    };
    const timer = setTimeout(done, ms);
    window.addEventListener("online", done);
  });
}

/** Run an action; show an ApiError's message in `target` instead of throwing. */
async function withError(target, action) {
  target.textContent = "";
  try {
    return await action();
  } catch (error) {
    target.textContent = error instanceof ApiError ? fieldErrors(error) : String(error.message || error);
    return undefined;
  }
}

/** A 422 lists its invalid fields; name them for the person. */
function fieldErrors(error) {
  const fields = error.problem.errors;
  if (!Array.isArray(fields) || fields.length === 0) return error.message;
  return `${error.message}: ${fields.map((f) => `${(f.loc || []).slice(-1)[0] || f.field} ${f.msg || f.message || ""}`).join("; ")}`;
}

// --- start ---------------------------------------------------------------------------------

if (api.session) {
  showSignedIn().catch(() => showSignedOut());
} else {
  showSignedOut();
}

// The browser tests read this to wait for the client and to drop the socket.
window.whatschat = { state, gateway, api };
