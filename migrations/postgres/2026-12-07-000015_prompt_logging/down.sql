ALTER TABLE tenants DROP COLUMN log_prompts;
