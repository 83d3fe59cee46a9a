ALTER TABLE usage_records DROP COLUMN tenant_charged_nano;
ALTER TABLE usage_records DROP COLUMN charged_nano;
ALTER TABLE tenants DROP COLUMN wholesale_prices;
ALTER TABLE plans DROP COLUMN prices;
