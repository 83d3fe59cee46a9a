ALTER TABLE tenants DROP COLUMN limits;
ALTER TABLE api_keys DROP COLUMN limits;
ALTER TABLE accounts DROP COLUMN plan_id;
DROP TABLE plans;
