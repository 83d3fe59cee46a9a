DROP TABLE usage_dead_letters;
ALTER TABLE usage_records DROP COLUMN usage_source;
