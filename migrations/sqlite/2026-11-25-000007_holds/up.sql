-- Balance holds. Every posting bumps its balance's `version`, so a copy of a balance held elsewhere
-- (the spendable balance cached in Redis or in process) can tell a newer ledger reading from an
-- older one and never goes back. `hold_cap_nano` caps what one request of a plan may reserve at
-- admission (NULL: the full worst case, prompt estimate + max_tokens at the plan's prices).
ALTER TABLE ledger_balances ADD COLUMN version BIGINT NOT NULL DEFAULT 0;
ALTER TABLE plans ADD COLUMN hold_cap_nano BIGINT;
