// One conversation's messages as the client knows them: the piece that makes
// "no message lost or doubled on screen" hold. No DOM, no network: pure logic.
//
// The rules every client needs (docs/events.md, docs/gateway.md):
//
// - A message is identified by (conversation_id, seq). The same message may
//   reach the client several times — from the HTTP answer to its own send, a
//   `message.created` event, a gateway replay after a reconnect, a history
//   page — and must be shown once. `accept` drops copies.
// - Sequence numbers are gap-free per conversation. `high` is the highest seq
//   up to which the client has seen EVERYTHING without a hole; it is the
//   position the client resumes from after a disconnect ("send me what comes
//   after `high`"). A message above `high + 1` means something was missed:
//   `accept` reports the gap and the caller fetches the history in between.
// - A message the client is still sending has no seq yet; it is kept by its
//   `client_msg_id` (`pending`) and replaced when the stored copy arrives.

export class Timeline {
  /**
   * @param {number} conversationId
   * @param {number} high the seq up to which nothing is missing (0: nothing known);
   *   for a conversation only seen in the list, the seq of its last message
   */
  constructor(conversationId, high = 0) {
    this.conversationId = conversationId;
    this.messages = new Map(); // seq -> MessageView, every message held (sparse below `low`)
    this.high = high; // contiguous top: every visible seq <= high is known or was never ours
    this.low = null; // lowest seq held, null when none; history scrolls back from it
    this.reachedStart = false; // true when history said there is nothing before `low`
    this.pending = new Map(); // client_msg_id -> {text, file, state} being sent by us
  }

  /**
   * Take one message from anywhere (event, replay, history, send answer).
   * @returns {"added"|"updated"|"duplicate"|"gap"} "gap" means it was added
   *   but seqs between `high` and it are missing: fetch them (`missingAfter`).
   */
  accept(message) {
    if (message.client_msg_id) this.pending.delete(message.client_msg_id);
    const known = this.messages.get(message.seq);
    if (known) {
      if (isNewer(message, known)) {
        this.messages.set(message.seq, message);
        return "updated";
      }
      return "duplicate";
    }
    this.messages.set(message.seq, message);
    if (this.low === null || message.seq < this.low) this.low = message.seq;
    if (message.seq <= this.high) return "added"; // older than our top: history
    if (message.seq === this.high + 1) {
      this._advance();
      return "added";
    }
    return "gap";
  }

  /** Apply an edit or deletion event (`message.edited` / `message.deleted`). */
  patch(seq, changes) {
    const known = this.messages.get(seq);
    if (!known) return false;
    this.messages.set(seq, { ...known, ...changes });
    return true;
  }

  /**
   * The history between `high` and a message that arrived above it was
   * fetched (or found empty: seqs a member may not see, e.g. before joining):
   * everything up to `upTo` is now known.
   */
  filledUpTo(upTo) {
    if (upTo > this.high) this.high = upTo;
    this._advance();
  }

  /** True when a gap is open: messages are held above `high + 1`. */
  get hasGap() {
    for (const seq of this.messages.keys()) if (seq > this.high + 1) return true;
    return false;
  }

  /** The lowest held seq above a gap, or null. */
  missingAfter() {
    let lowestAbove = null;
    for (const seq of this.messages.keys()) {
      if (seq > this.high && (lowestAbove === null || seq < lowestAbove)) lowestAbove = seq;
    }
    return lowestAbove;
  }

  /** Every held message, oldest first. */
  ordered() {
    return [...this.messages.values()].sort((a, b) => a.seq - b.seq);
  }

  /** The newest held message (for list previews), or null. */
  last() {
    let best = null;
    for (const message of this.messages.values()) if (!best || message.seq > best.seq) best = message;
    return best;
  }

  _advance() {
    while (this.messages.has(this.high + 1)) this.high += 1;
  }
}

/** Two copies of one message: the edited/deleted one wins. */
function isNewer(candidate, known) {
  if (candidate.deleted && !known.deleted) return true;
  if (!candidate.edited_at) return false;
  return !known.edited_at || candidate.edited_at > known.edited_at;
}

/** A client_msg_id: unique per send, reused for every retry of that send. */
export function newClientMsgId() {
  if (crypto.randomUUID) return crypto.randomUUID();
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
}
