-- Facts about this deployment that must survive restarts, e.g. `api_key_pepper_fingerprint`: a
-- gateway whose configured pepper no longer matches the one the stored API keys were made with
-- refuses to start (every key would silently stop working).
CREATE TABLE server_settings (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    updated_at TIMESTAMP NOT NULL
);
