DROP TABLE idempotency_records;
DROP TRIGGER audit_log_append_only ON audit_log;
DROP TABLE audit_log;
DROP FUNCTION audit_log_append_only();
DROP TABLE refresh_tokens;
DROP TABLE api_keys;
DROP TABLE users;
DROP TABLE accounts;
DROP TABLE tenants;
