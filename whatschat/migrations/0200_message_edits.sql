-- Edits and deletions do not take a new seq, so a returning client learns
-- about them through a second per-conversation counter: every edit or delete
-- takes the conversation's next edit_seq under the same row lock as sends, so
-- edit sequences are gap-free and in commit order too. POST /v1/sync returns
-- the messages whose edit_seq is above the client's edit position
-- (docs/messaging.md, "Edits a client missed").
ALTER TABLE conversations ADD COLUMN last_edit_seq bigint NOT NULL DEFAULT 0;
ALTER TABLE messages ADD COLUMN edit_seq bigint;

-- sync: "messages of this conversation edited or deleted after edit_seq N"
CREATE INDEX messages_conversation_edit_seq_idx
    ON messages (conversation_id, edit_seq) WHERE edit_seq IS NOT NULL;
