-- Kiln control plane schema. Portable between SQLite and PostgreSQL: only TEXT and BIGINT
-- columns, ids are UUID strings made by the server, times are Unix milliseconds, booleans
-- are 0/1 and binary secrets are base64 text.
CREATE TABLE accounts (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    default_image_id TEXT,
    created_at BIGINT NOT NULL
);

CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL REFERENCES accounts(id),
    name TEXT NOT NULL,
    key_hash TEXT NOT NULL UNIQUE,
    is_admin BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);

CREATE TABLE token_keys (
    kid TEXT PRIMARY KEY,
    key_sealed TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    retired_at BIGINT
);

CREATE TABLE registry_credentials (
    id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL REFERENCES accounts(id),
    registry TEXT NOT NULL,
    kind TEXT NOT NULL,
    username TEXT,
    secret_sealed TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (account_id, registry)
);

CREATE TABLE images (
    id TEXT PRIMARY KEY,
    account_id TEXT REFERENCES accounts(id),
    official BIGINT NOT NULL,
    name TEXT NOT NULL,
    description TEXT,
    oci_url TEXT,
    registry_credential_id TEXT REFERENCES registry_credentials(id),
    raw_url TEXT,
    raw_checksum TEXT,
    raw_checksum_type TEXT,
    created_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX images_account_name ON images (account_id, name);

CREATE TABLE roles (
    id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL REFERENCES accounts(id),
    name TEXT NOT NULL,
    image_id TEXT REFERENCES images(id),
    user_data TEXT,
    vendor_data TEXT,
    created_at BIGINT NOT NULL,
    UNIQUE (account_id, name)
);

CREATE TABLE machines (
    id TEXT PRIMARY KEY,
    account_id TEXT REFERENCES accounts(id),
    state TEXT NOT NULL,
    hostname TEXT,
    system_uuid TEXT,
    inventory TEXT NOT NULL,
    approval_code TEXT,
    code_expires_at BIGINT,
    claim_secret_hash TEXT,
    credential_hash TEXT UNIQUE,
    credential_issued_at BIGINT,
    kexec_installer BIGINT NOT NULL DEFAULT 0,
    orders_version BIGINT NOT NULL DEFAULT 0,
    environment TEXT,
    last_seen_at BIGINT,
    created_at BIGINT NOT NULL
);
CREATE INDEX machines_approval_code ON machines (approval_code);
CREATE INDEX machines_account ON machines (account_id);

CREATE TABLE machine_roles (
    machine_id TEXT NOT NULL REFERENCES machines(id) ON DELETE CASCADE,
    role_id TEXT NOT NULL REFERENCES roles(id) ON DELETE CASCADE,
    PRIMARY KEY (machine_id, role_id)
);

CREATE TABLE approval_failures (
    account_id TEXT NOT NULL,
    at BIGINT NOT NULL
);
CREATE INDEX approval_failures_account ON approval_failures (account_id, at);

CREATE TABLE runs (
    id TEXT PRIMARY KEY,
    machine_id TEXT NOT NULL REFERENCES machines(id) ON DELETE CASCADE,
    account_id TEXT NOT NULL REFERENCES accounts(id),
    status TEXT NOT NULL,
    percent BIGINT NOT NULL DEFAULT 0,
    current_step TEXT,
    image_id TEXT NOT NULL,
    image_name TEXT NOT NULL,
    image_source TEXT NOT NULL,
    registry_credential_id TEXT,
    user_data TEXT,
    vendor_data TEXT,
    acked_seq BIGINT NOT NULL DEFAULT 0,
    error TEXT,
    created_at BIGINT NOT NULL,
    started_at BIGINT,
    finished_at BIGINT
);
CREATE INDEX runs_machine ON runs (machine_id, created_at);

CREATE TABLE run_events (
    run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    seq BIGINT NOT NULL,
    at BIGINT NOT NULL,
    event TEXT NOT NULL,
    PRIMARY KEY (run_id, seq)
);

CREATE TABLE machine_actions (
    id TEXT PRIMARY KEY,
    machine_id TEXT NOT NULL REFERENCES machines(id) ON DELETE CASCADE,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    acked_at BIGINT
);
CREATE INDEX machine_actions_machine ON machine_actions (machine_id, status);
