-- Foundation: tenants, accounts, users, API keys, refresh tokens, audit log, idempotency records.
-- Kept identical in migrations/postgres and migrations/sqlite except for the audit trigger syntax.
-- Ids are TEXT (UUIDv7), timestamps TIMESTAMP in UTC, money BIGINT nano-units (1e-9 of a unit).

CREATE TABLE tenants (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    slug TEXT NOT NULL UNIQUE,
    allow_signup BOOLEAN NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('active', 'suspended')),
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL
);

CREATE TABLE accounts (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (id),
    name TEXT NOT NULL,
    billing_mode TEXT NOT NULL CHECK (billing_mode IN ('prepaid', 'postpaid')),
    credit_limit_nano BIGINT NOT NULL CHECK (credit_limit_nano >= 0),
    status TEXT NOT NULL CHECK (status IN ('active', 'suspended')),
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL
);
CREATE INDEX accounts_tenant ON accounts (tenant_id, created_at);

CREATE TABLE users (
    id TEXT PRIMARY KEY,
    tenant_id TEXT REFERENCES tenants (id),
    account_id TEXT REFERENCES accounts (id),
    email TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('operator', 'owner', 'admin', 'finance', 'developer')),
    status TEXT NOT NULL CHECK (status IN ('active', 'disabled')),
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    last_login_at TIMESTAMP,
    CHECK ((role = 'operator') = (tenant_id IS NULL)),
    CHECK ((role = 'developer') = (account_id IS NOT NULL))
);
CREATE UNIQUE INDEX users_tenant_email ON users (tenant_id, email);
CREATE UNIQUE INDEX users_operator_email ON users (email) WHERE tenant_id IS NULL;

CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (id),
    account_id TEXT NOT NULL REFERENCES accounts (id),
    created_by TEXT REFERENCES users (id),
    name TEXT NOT NULL,
    prefix TEXT NOT NULL,
    last4 TEXT NOT NULL,
    secret_hash TEXT NOT NULL UNIQUE,
    previous_secret_hash TEXT UNIQUE,
    previous_valid_until TIMESTAMP,
    scopes TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('active', 'revoked')),
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    last_used_at TIMESTAMP,
    expires_at TIMESTAMP,
    revoked_at TIMESTAMP,
    rotated_at TIMESTAMP
);
CREATE INDEX api_keys_account ON api_keys (tenant_id, account_id, created_at);

CREATE TABLE refresh_tokens (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users (id),
    family_id TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    created_at TIMESTAMP NOT NULL,
    expires_at TIMESTAMP NOT NULL,
    used_at TIMESTAMP,
    revoked_at TIMESTAMP
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);

CREATE TABLE audit_log (
    id TEXT PRIMARY KEY,
    tenant_id TEXT,
    actor_user_id TEXT,
    actor_role TEXT,
    action TEXT NOT NULL,
    target_type TEXT NOT NULL,
    target_id TEXT NOT NULL,
    detail TEXT NOT NULL,
    ip TEXT,
    request_id TEXT,
    created_at TIMESTAMP NOT NULL
);
CREATE INDEX audit_log_tenant ON audit_log (tenant_id, created_at);

CREATE TABLE idempotency_records (
    id TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('in_flight', 'done')),
    response_status INTEGER,
    response_body TEXT,
    created_at TIMESTAMP NOT NULL
);

CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;
