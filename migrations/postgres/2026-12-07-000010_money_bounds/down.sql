DROP TABLE usage_dead_letters;
UPDATE usage_records SET status = 'client_disconnected' WHERE status IN ('client_gone', 'shutdown');
ALTER TABLE usage_records DROP CONSTRAINT usage_records_status_check;
ALTER TABLE usage_records ADD CONSTRAINT usage_records_status_check
    CHECK (status IN ('ok', 'client_disconnected', 'upstream_error'));
ALTER TABLE usage_records DROP COLUMN usage_source;
