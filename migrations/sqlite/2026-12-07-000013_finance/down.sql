DROP TABLE statements;
DROP TABLE export_cutoffs;
DROP INDEX usage_records_tenant_time;
ALTER TABLE usage_records DROP COLUMN recorded_at;
ALTER TABLE usage_records DROP COLUMN request_nano;
ALTER TABLE usage_records DROP COLUMN completion_nano_per_mtok;
ALTER TABLE usage_records DROP COLUMN prompt_nano_per_mtok;
