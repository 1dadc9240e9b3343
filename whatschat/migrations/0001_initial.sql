-- The initial schema. Each index names the query it serves; see docs/schema.md.

CREATE TABLE users (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    username      text NOT NULL CHECK (username ~ '^[A-Za-z0-9_.]{3,32}$'),
    display_name  text NOT NULL CHECK (char_length(display_name) BETWEEN 1 AND 64),
    password_hash text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
-- login, user lookup and case-insensitive uniqueness of usernames
CREATE UNIQUE INDEX users_username_lower_key ON users (lower(username));

-- One family per logged-in device: every refresh rotates the token inside the
-- family; presenting a rotated token revokes the family.
CREATE TABLE refresh_families (
    id             uuid PRIMARY KEY,
    user_id        bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    device_name    text NOT NULL DEFAULT '',
    created_at     timestamptz NOT NULL DEFAULT now(),
    last_used_at   timestamptz NOT NULL DEFAULT now(),
    revoked_at     timestamptz,
    revoked_reason text
);
-- "log out everywhere" and listing a user's devices
CREATE INDEX refresh_families_user_idx ON refresh_families (user_id) WHERE revoked_at IS NULL;

CREATE TABLE refresh_tokens (
    token_hash bytea PRIMARY KEY,            -- SHA-256 of the opaque token: refresh looks it up
    family_id  uuid NOT NULL REFERENCES refresh_families (id) ON DELETE CASCADE,
    issued_at  timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    rotated_at timestamptz                   -- set when exchanged; reuse afterwards is theft
);
-- revoking a family's tokens
CREATE INDEX refresh_tokens_family_idx ON refresh_tokens (family_id);

CREATE TABLE conversations (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind        text NOT NULL CHECK (kind IN ('direct', 'group')),
    title       text CHECK (title IS NULL OR char_length(title) BETWEEN 1 AND 100),
    description text CHECK (description IS NULL OR char_length(description) <= 500),
    avatar_key  text,
    -- "lowId:highId" of a direct conversation's two users: open-or-get is one lookup
    direct_key  text UNIQUE,
    last_seq    bigint NOT NULL DEFAULT 0,   -- last assigned per-conversation sequence
    created_by  bigint REFERENCES users (id),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CHECK ((kind = 'direct') = (direct_key IS NOT NULL))
);

-- A member sees messages with joined_seq < seq <= coalesce(left_seq, infinity).
CREATE TABLE members (
    conversation_id bigint NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    user_id         bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role            text NOT NULL DEFAULT 'member' CHECK (role IN ('admin', 'member')),
    joined_seq      bigint NOT NULL DEFAULT 0,
    left_seq        bigint,
    read_seq        bigint NOT NULL DEFAULT 0,   -- read position: read up to this seq
    joined_at       timestamptz NOT NULL DEFAULT now(),
    left_at         timestamptz,
    PRIMARY KEY (conversation_id, user_id)
);
-- "my conversations" (list, sync, gateway subscriptions) for current members
CREATE INDEX members_user_active_idx ON members (user_id, conversation_id) WHERE left_seq IS NULL;

CREATE TABLE attachments (
    id              uuid PRIMARY KEY,
    conversation_id bigint NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    uploader_id     bigint NOT NULL REFERENCES users (id),
    object_key      text NOT NULL UNIQUE,    -- orphan sweeper: "does this object have a record?"
    file_name       text NOT NULL,
    content_type    text NOT NULL,
    size_bytes      bigint NOT NULL CHECK (size_bytes >= 0),
    created_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE messages (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    conversation_id bigint NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    seq           bigint NOT NULL,
    sender_id     bigint REFERENCES users (id),   -- NULL for system messages
    client_msg_id text,
    kind          text NOT NULL CHECK (kind IN ('text', 'file', 'system')),
    body          text,
    reply_to_seq  bigint,
    attachment_id uuid REFERENCES attachments (id),
    system_event  jsonb,
    created_at    timestamptz NOT NULL DEFAULT now(),
    edited_at     timestamptz,
    deleted_at    timestamptz,
    -- history and sync page by (conversation_id, seq)
    CONSTRAINT messages_conversation_seq_key UNIQUE (conversation_id, seq),
    -- a retried send finds the original by (sender_id, client_msg_id)
    CONSTRAINT messages_sender_client_msg_id_key UNIQUE (sender_id, client_msg_id)
);
-- downloads: "was this attachment sent in a conversation the caller can read?"
CREATE INDEX messages_attachment_idx ON messages (attachment_id) WHERE attachment_id IS NOT NULL;

-- Events written in the same transaction as the change they describe, then
-- published to Redis after commit (and by the sweeper when that was missed).
CREATE TABLE outbox (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    channel      text NOT NULL,
    payload      bytea NOT NULL,             -- the encoded envelope, published verbatim
    created_at   timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz
);
-- the sweeper's scan for rows never published
CREATE INDEX outbox_unpublished_idx ON outbox (id) WHERE published_at IS NULL;
