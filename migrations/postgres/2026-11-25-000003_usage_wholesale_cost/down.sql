ALTER TABLE usage_records DROP COLUMN wholesale_cost_nano;
