ALTER TABLE plans DROP COLUMN hold_cap_nano;
ALTER TABLE ledger_balances DROP COLUMN version;
