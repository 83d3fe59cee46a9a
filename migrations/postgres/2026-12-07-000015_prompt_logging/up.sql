-- A tenant may opt in to having its requests' prompts written to the gateway's log (off: never).
ALTER TABLE tenants ADD COLUMN log_prompts BOOLEAN NOT NULL DEFAULT FALSE;
