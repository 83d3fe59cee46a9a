//! `taogate serve`: the gateway on the configured database, until SIGINT/SIGTERM. Prints
//! `{"url": …}` on stdout once listening.

use std::net::TcpListener;

use anyhow::Context;

use crate::config::Config;
use crate::state::AppState;

pub async fn run(config: Config) -> anyhow::Result<()> {
    config.validate(true)?;
    let db = super::open_db(&config, config.database.auto_migrate)?;
    {
        use secrecy::ExposeSecret;
        let mut conn = db.get()?;
        crate::auth::pepper::check(
            &mut conn,
            config.auth.api_key_pepper.expose_secret().as_bytes(),
        )?;
    }
    let listener =
        TcpListener::bind(config.listen).with_context(|| format!("binding {}", config.listen))?;
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let registry = crate::pool::registry::Registry::new(&config.redis_url, &config.redis_prefix)?;
    let running = crate::app::start(AppState::new(db, config, registry)?, listener, workers)?;
    tracing::info!(addr = %running.addr, "taogate serving on http://{}", running.addr);
    // One machine-readable line, so a supervisor (or a test) can use `listen = "…:0"`.
    println!(
        "{}",
        serde_json::json!({"url": format!("http://{}", running.addr)})
    );
    running.finish().await?;
    Ok(())
}
