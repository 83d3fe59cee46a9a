//! `taogate dev`: everything in one process on embedded defaults (SQLite in the data dir,
//! in-process state). Generates and keeps its own secrets in `<data-dir>/dev-secrets.json`, seeds a
//! demo tenant, account, developer and API key on first start and writes `<data-dir>/demo.json`;
//! later starts reuse both.

use std::net::TcpListener;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use crate::auth::{api_key, password, secrets};
use crate::billing::adjust::Adjustment;
use crate::billing::prices::{Price, PriceBook};
use crate::config::{Config, ModelConfig};
use crate::db::Db;
use crate::domain::{Nano, Role};
use crate::error::ApiError;
use crate::limits::LimitSet;
use crate::models::api_key::{ApiKey, NewKey};
use crate::models::audit::{Actor, AuditEntry};
use crate::models::plan::Plan;
use crate::models::tenant::Tenant;
use crate::models::user::User;
use crate::pool::registry::Registry;
use crate::routes::keys::SCOPES;
use crate::state::AppState;
use crate::worker::Worker;

const DEMO_SLUG: &str = "demo";
const DEMO_EMAIL: &str = "developer@demo.taogate.local";
const OWNER_EMAIL: &str = "owner@demo.taogate.local";
const FINANCE_EMAIL: &str = "finance@demo.taogate.local";
/// The demo plan: 1 unit per 1M prompt tokens, 2 per 1M completion tokens, 0.0001 per request;
/// each request reserves at most 0.0002 (its hold cap), so the starting credit of 0.001 pays for
/// a handful of requests and then answers 402.
const DEMO_PRICE: Price = Price {
    prompt_nano_per_mtok: 1_000_000_000,
    completion_nano_per_mtok: 2_000_000_000,
    request_nano: 100_000,
};
const DEMO_HOLD_CAP: Nano = Nano(200_000);
const DEMO_CREDIT: Nano = Nano(1_000_000);

#[derive(Serialize, Deserialize)]
struct DevSecrets {
    jwt_secret: String,
    api_key_pepper: String,
    /// Seals payment provider secrets (added later: older files get one on next start).
    #[serde(default)]
    encryption_key: String,
}

/// What a developer needs to try the API, as written to `demo.json`: the developer (`email`,
/// `password`, `api_key`), the tenant's owner and its finance user.
#[derive(Serialize, Deserialize)]
pub struct Demo {
    pub base_url: String,
    pub api_key: String,
    pub tenant: String,
    pub email: String,
    pub password: String,
    /// Absent in a data dir seeded by an older version.
    #[serde(default)]
    pub owner_email: String,
    #[serde(default)]
    pub owner_password: String,
    #[serde(default)]
    pub finance_email: String,
    #[serde(default)]
    pub finance_password: String,
}

fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    std::fs::write(path, contents).with_context(|| format!("writing {}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}

/// Fills unset secrets from the data dir, generating them on first start.
fn load_dev_secrets(config: &mut Config) -> anyhow::Result<()> {
    let path = config.data_dir.join("dev-secrets.json");
    let stored: DevSecrets = match std::fs::read_to_string(&path) {
        Ok(text) => {
            let mut stored: DevSecrets = serde_json::from_str(&text)
                .with_context(|| format!("reading {}", path.display()))?;
            if stored.encryption_key.is_empty() {
                stored.encryption_key = hex::encode(secrets::random_bytes(32));
                write_private(&path, &serde_json::to_string_pretty(&stored)?)?;
            }
            stored
        }
        Err(_) => {
            let fresh = DevSecrets {
                jwt_secret: secrets::random_token(32),
                api_key_pepper: secrets::random_token(32),
                encryption_key: hex::encode(secrets::random_bytes(32)),
            };
            write_private(&path, &serde_json::to_string_pretty(&fresh)?)?;
            fresh
        }
    };
    if config.payments.encryption_key.expose_secret().is_empty() {
        config.payments.encryption_key = SecretString::from(stored.encryption_key);
    }
    if config.auth.jwt_secret.expose_secret().is_empty() {
        config.auth.jwt_secret = SecretString::from(stored.jwt_secret);
    }
    if config.auth.api_key_pepper.expose_secret().is_empty() {
        config.auth.api_key_pepper = SecretString::from(stored.api_key_pepper);
    }
    Ok(())
}

/// Seeds the demo tenant on first start — a priced default plan with key limits, a prepaid account
/// with a starting credit, its developer and key, an owner and a finance user — and returns the
/// demo credentials.
async fn seed(db: &Db, pepper: &[u8], base_url: String) -> anyhow::Result<Demo> {
    let passwords = [
        secrets::random_token(16),
        secrets::random_token(16),
        secrets::random_token(16),
    ];
    let mut hashes = Vec::new();
    for p in &passwords {
        hashes.push(
            password::hash(p.clone())
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?,
        );
    }
    let secret = api_key::generate(pepper);
    let key_secret = secret.secret.clone();
    db.write(move |c| {
        let actor = Actor {
            ip: Some("dev-seed".into()),
            ..Default::default()
        };
        let tenant = Tenant::new("Demo reseller".into(), DEMO_SLUG.into(), true);
        tenant.insert(c)?;
        let key_limits = LimitSet {
            rpm: Some(60),
            tpm: Some(100_000),
            concurrency: Some(4),
            ..Default::default()
        };
        let prices = PriceBook([("*".to_owned(), DEMO_PRICE)].into_iter().collect());
        let mut plan = Plan::new(
            tenant.id.clone(),
            "Demo pay-as-you-go".into(),
            (key_limits, LimitSet::default()),
            &prices,
        );
        plan.hold_cap_nano = Some(DEMO_HOLD_CAP);
        plan.insert(c)?;
        Plan::make_default(c, &tenant.id, &plan.id)?;
        let [developer_hash, owner_hash, finance_hash]: [String; 3] =
            hashes.try_into().expect("three hashes");
        let (account, user) = User::create_developer_with_account(
            c,
            &tenant.id,
            "Demo account".into(),
            DEMO_EMAIL,
            developer_hash,
        )?;
        let owner = User::new(
            Some(tenant.id.clone()),
            None,
            OWNER_EMAIL,
            owner_hash,
            Role::Owner,
        );
        owner.insert(c)?;
        User::new(
            Some(tenant.id.clone()),
            None,
            FINANCE_EMAIL,
            finance_hash,
            Role::Finance,
        )
        .insert(c)?;
        let new = NewKey {
            tenant_id: tenant.id.clone(),
            account_id: account.id.clone(),
            created_by: Some(user.id.clone()),
            name: "demo key".into(),
            scopes: SCOPES.map(String::from).to_vec(),
            expires_at: None,
            limits: Default::default(),
        };
        let key = ApiKey::new(new, &secret);
        key.insert(c)?;
        Adjustment {
            tenant: &tenant.id,
            account: &account.id,
            by: Some(&owner.id),
            key: "dev-seed-credit",
            amount: DEMO_CREDIT,
            reason: "demo starting credit",
        }
        .post(c)
        .map_err(|e| ApiError::internal_msg(e.to_string()))?;
        AuditEntry::record(
            c,
            &actor,
            Some(&tenant.id),
            "dev.seed",
            ("tenant", tenant.id.as_str()),
            serde_json::json!({"account_id": account.id, "user_id": user.id, "api_key_id": key.id,
                "plan_id": plan.id, "credit_nano": DEMO_CREDIT}),
        )?;
        Ok::<_, ApiError>(())
    })
    .await
    .map_err(|e| anyhow::anyhow!("seeding the demo tenant: {e}"))?;
    let [password, owner_password, finance_password] = passwords;
    Ok(Demo {
        base_url,
        api_key: key_secret,
        tenant: DEMO_SLUG.into(),
        email: DEMO_EMAIL.into(),
        password,
        owner_email: OWNER_EMAIL.into(),
        owner_password,
        finance_email: FINANCE_EMAIL.into(),
        finance_password,
    })
}

/// Starts a local subnet in process; its worker announces itself in `registry`. Returns the
/// worker's URL and the worker, which this process's gateway calls directly.
async fn use_local_subnet(
    config: &mut Config,
    registry: &Registry,
    token_delay_ms: u64,
) -> anyhow::Result<(String, Option<Arc<Worker>>)> {
    let heartbeat = (
        std::time::Duration::from_secs(config.pool.heartbeat_secs.max(1)),
        std::time::Duration::from_secs(config.pool.heartbeat_ttl_secs.max(1)),
    );
    let dir = config.data_dir.join("devnet");
    let delay = std::time::Duration::from_millis(token_delay_ms);
    let subnet = crate::devnet::subnet::spawn(&dir, delay, registry, heartbeat).await?;
    config.pool.worker_secret = SecretString::from(subnet.worker_secret);
    for model in subnet.models {
        if !config.models.iter().any(|m| m.id == model) {
            config.models.push(ModelConfig {
                id: model.into(),
                owned_by: "taogate-devnet".into(),
                max_tokens: None,
            });
        }
    }
    Ok((subnet.worker_url, subnet.worker))
}

pub async fn run(mut config: Config, token_delay_ms: u64) -> anyhow::Result<()> {
    config.ensure_data_dir()?;
    // Bind first: a second `dev` on a taken port must fail before it touches the data dir (its
    // local subnet would overwrite the running one's metagraph files).
    let listener =
        TcpListener::bind(config.listen).with_context(|| format!("binding {}", config.listen))?;
    load_dev_secrets(&mut config)?;
    let registry = Registry::new(&config.redis_url, &config.redis_prefix)?;
    let (worker_url, worker) = use_local_subnet(&mut config, &registry, token_delay_ms).await?;
    config.validate(true)?;
    let db = super::open_db(&config, true)?;
    {
        use secrecy::ExposeSecret;
        let mut conn = db.get()?;
        crate::auth::pepper::check(
            &mut conn,
            config.auth.api_key_pepper.expose_secret().as_bytes(),
        )?;
    }
    let base_url = format!("http://{}", listener.local_addr()?);
    let demo_path = config.data_dir.join("demo.json");
    let demo = match std::fs::read_to_string(&demo_path) {
        Ok(text) => {
            let mut demo: Demo = serde_json::from_str(&text)
                .with_context(|| format!("reading {}", demo_path.display()))?;
            demo.base_url = base_url;
            demo
        }
        Err(_) => {
            let exists = db.run(|c| Tenant::find_by_slug(c, DEMO_SLUG)).await.is_ok();
            if exists {
                anyhow::bail!(
                    "{} is missing but the demo tenant exists: remove {} to start afresh",
                    demo_path.display(),
                    config.data_dir.display()
                );
            }
            seed(
                &db,
                config.auth.api_key_pepper.expose_secret().as_bytes(),
                base_url,
            )
            .await?
        }
    };
    write_private(&demo_path, &serde_json::to_string_pretty(&demo)?)?;
    let state = AppState::new(db, config, registry)?;
    if let Some(worker) = worker {
        state.pool.attach_colocated(&worker_url, worker);
    }
    let running = crate::app::start(state, listener, 2)?;
    println!(
        "taogate dev is up on {}  (data: {})",
        demo.base_url,
        demo_path.display()
    );
    println!(
        "  tenant {}  ·  developer {}  ·  password {}",
        demo.tenant, demo.email, demo.password
    );
    if !demo.owner_email.is_empty() {
        println!(
            "  owner {} / {}  ·  finance {} / {}",
            demo.owner_email, demo.owner_password, demo.finance_email, demo.finance_password
        );
        println!(
            "  plan: 0.0001 per request + 1 per 1M prompt / 2 per 1M completion tokens; rpm 60, tpm 100000, \
             concurrency 4; starting credit 0.001 (then 402)"
        );
    }
    println!("  API key {}", demo.api_key);
    println!(
        "  try:  curl -H \"Authorization: Bearer {}\" {}/v1/models",
        demo.api_key, demo.base_url
    );
    println!(
        "  chat: curl -N {}/v1/chat/completions -H \"Authorization: Bearer {}\" -H 'content-type: application/json' \\\n          -d '{{\"model\":\"taogate-demo\",\"stream\":true,\"messages\":[{{\"role\":\"user\",\"content\":\"hi\"}}]}}'",
        demo.base_url, demo.api_key
    );
    println!(
        "  OpenAI SDK: OpenAI(base_url=\"{}/v1\", api_key=\"{}\")",
        demo.base_url, demo.api_key
    );
    println!("  docs: {}/docs/", demo.base_url);
    running.finish().await?;
    Ok(())
}
