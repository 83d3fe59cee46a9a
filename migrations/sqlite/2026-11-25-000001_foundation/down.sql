DROP TABLE idempotency_records;
DROP TABLE audit_log;
DROP TABLE refresh_tokens;
DROP TABLE api_keys;
DROP TABLE users;
DROP TABLE accounts;
DROP TABLE tenants;
