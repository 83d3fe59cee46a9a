-- What the answering route cost us (its wholesale price x the tokens), for margin reporting.
ALTER TABLE usage_records ADD COLUMN wholesale_cost_nano BIGINT;
