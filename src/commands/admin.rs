//! `taogate admin …`: bootstrap operations run from a shell on the deployment (audited as the CLI).

use crate::auth::password;
use crate::billing::prices::PriceBook;
use crate::config::Config;
use crate::domain::Role;
use crate::error::{ApiError, ResultExt};
use crate::limits::LimitSet;
use crate::models::audit::{Actor, AuditEntry};
use crate::models::plan::Plan;
use crate::models::tenant::Tenant;
use crate::models::user::User;
use crate::{auth, validate};

fn cli_actor() -> Actor {
    Actor {
        ip: Some("cli".into()),
        ..Default::default()
    }
}

fn password_or_generated(given: Option<String>) -> anyhow::Result<(String, bool)> {
    match given {
        Some(p) => {
            password::check_policy(&p).map_err(|e| anyhow::anyhow!("{e}"))?;
            Ok((p, false))
        }
        None => Ok((auth::secrets::random_token(18), true)),
    }
}

/// Creates a platform operator. Prints a generated password when none is given.
pub async fn create_operator(
    config: Config,
    email: String,
    given: Option<String>,
) -> anyhow::Result<()> {
    let db = super::open_db(&config, false)?;
    let email = validate::email("email", &email).map_err(|e| anyhow::anyhow!("{e}"))?;
    let (pw, generated) = password_or_generated(given)?;
    let hash = password::hash(pw.clone())
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let user = User::new(None, None, &email, hash, Role::Operator);
    let id = user.id.clone();
    db.write(move |c| {
        user.insert(c)
            .conflict_as("email_taken", "an operator with this email already exists")?;
        AuditEntry::record(
            c,
            &cli_actor(),
            None,
            "user.create",
            ("user", user.id.as_str()),
            serde_json::json!({"email": user.email, "role": "operator"}),
        )?;
        Ok::<_, ApiError>(())
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    println!("operator {email} created (id {id})");
    if generated {
        println!("password: {pw}");
    }
    Ok(())
}

/// Creates a tenant, optionally with its owner.
pub async fn create_tenant(
    config: Config,
    name: String,
    slug: String,
    allow_signup: bool,
    owner_email: Option<String>,
    owner_password: Option<String>,
) -> anyhow::Result<()> {
    let db = super::open_db(&config, false)?;
    let err = |e: ApiError| anyhow::anyhow!("{e}");
    let tenant = Tenant::new(
        validate::name("name", &name, 200).map_err(err)?,
        validate::slug("slug", &slug).map_err(err)?,
        allow_signup,
    );
    let mut shown_password = None;
    let owner = match owner_email {
        Some(email) => {
            let email = validate::email("owner_email", &email).map_err(err)?;
            let (pw, generated) = password_or_generated(owner_password)?;
            let hash = password::hash(pw.clone()).await.map_err(err)?;
            if generated {
                shown_password = Some(pw);
            }
            Some(User::new(
                Some(tenant.id.clone()),
                None,
                &email,
                hash,
                Role::Owner,
            ))
        }
        None => None,
    };
    let (id, owner_email) = (tenant.id.clone(), owner.as_ref().map(|o| o.email.clone()));
    db.write(move |c| {
        tenant.insert(c).conflict_as("slug_taken", "a tenant with this slug already exists")?;
        AuditEntry::record(c, &cli_actor(), Some(&tenant.id), "tenant.create", ("tenant", tenant.id.as_str()),
            serde_json::json!({"name": tenant.name, "slug": tenant.slug, "allow_signup": tenant.allow_signup}))?;
        if let Some(owner) = owner {
            owner.insert(c).conflict_as("email_taken", "a user with this email already exists")?;
            AuditEntry::record(c, &cli_actor(), Some(&tenant.id), "user.create", ("user", owner.id.as_str()),
                serde_json::json!({"email": owner.email, "role": "owner"}))?;
        }
        Ok::<_, ApiError>(())
    })
    .await
    .map_err(err)?;
    println!("tenant {slug} created (id {id})");
    if let Some(email) = owner_email {
        println!("owner: {email}");
    }
    if let Some(pw) = shown_password {
        println!("owner password: {pw}");
    }
    Ok(())
}

/// What `taogate admin bootstrap` sets up (its command-line arguments).
#[derive(clap::Args)]
pub struct Bootstrap {
    #[arg(long)]
    pub operator_email: String,
    #[arg(long, env = "TAOGATE_OPERATOR_PASSWORD")]
    pub operator_password: Option<String>,
    #[arg(long)]
    pub tenant_name: String,
    #[arg(long)]
    pub tenant_slug: String,
    #[arg(long)]
    pub owner_email: String,
    #[arg(long, env = "TAOGATE_OWNER_PASSWORD")]
    pub owner_password: Option<String>,
    /// The default plan's prices as `POST /api/v1/plans` takes them, e.g.
    /// '{"*": {"prompt_nano_per_mtok": 1000000000, "completion_nano_per_mtok": 2000000000, "request_nano": 0}}';
    /// none: free.
    #[arg(long)]
    pub prices: Option<String>,
    #[arg(long)]
    pub allow_signup: bool,
}

/// A deployment's first run in one step: the platform operator, the first tenant with its owner
/// and a default plan — all in one transaction (nothing is written if any of it fails) — then
/// what the gateway still needs (a worker) and how to go on. Passwords not given are generated
/// and printed once.
pub async fn bootstrap(config: Config, b: Bootstrap) -> anyhow::Result<()> {
    let db = super::open_db(&config, false)?;
    let err = |e: ApiError| anyhow::anyhow!("{e}");
    let operator_email = validate::email("operator_email", &b.operator_email).map_err(err)?;
    let owner_email = validate::email("owner_email", &b.owner_email).map_err(err)?;
    let tenant = Tenant::new(
        validate::name("tenant_name", &b.tenant_name, 200).map_err(err)?,
        validate::slug("tenant_slug", &b.tenant_slug).map_err(err)?,
        b.allow_signup,
    );
    let prices: PriceBook = match &b.prices {
        Some(text) => serde_json::from_str(text)
            .map_err(|e| anyhow::anyhow!("--prices: not a price book ({e})"))?,
        None => PriceBook::default(),
    };
    validate::prices("prices", &prices).map_err(err)?;
    let (operator_pw, operator_generated) = password_or_generated(b.operator_password)?;
    let (owner_pw, owner_generated) = password_or_generated(b.owner_password)?;
    let operator_hash = password::hash(operator_pw.clone()).await.map_err(err)?;
    let owner_hash = password::hash(owner_pw.clone()).await.map_err(err)?;
    let operator = User::new(None, None, &operator_email, operator_hash, Role::Operator);
    let owner = User::new(
        Some(tenant.id.clone()),
        None,
        &owner_email,
        owner_hash,
        Role::Owner,
    );
    let plan = Plan::new(
        tenant.id.clone(),
        "Default".into(),
        (LimitSet::default(), LimitSet::default()),
        &prices,
    );
    let (tenant_id, slug) = (tenant.id.clone(), tenant.slug.clone());
    db.write(move |c| {
        let actor = cli_actor();
        operator
            .insert(c)
            .conflict_as("email_taken", "a user with the operator's email already exists")?;
        AuditEntry::record(c, &actor, None, "user.create", ("user", operator.id.as_str()),
            serde_json::json!({"email": operator.email, "role": "operator"}))?;
        tenant.insert(c).conflict_as("slug_taken", "a tenant with this slug already exists")?;
        AuditEntry::record(c, &actor, Some(&tenant.id), "tenant.create", ("tenant", tenant.id.as_str()),
            serde_json::json!({"name": tenant.name, "slug": tenant.slug, "allow_signup": tenant.allow_signup}))?;
        owner.insert(c).conflict_as("email_taken", "a user with the owner's email already exists")?;
        AuditEntry::record(c, &actor, Some(&tenant.id), "user.create", ("user", owner.id.as_str()),
            serde_json::json!({"email": owner.email, "role": "owner"}))?;
        plan.insert(c)?;
        Plan::make_default(c, &tenant.id, &plan.id)?;
        AuditEntry::record(c, &actor, Some(&tenant.id), "plan.create", ("plan", plan.id.as_str()),
            serde_json::json!({"name": plan.name, "is_default": true}))?;
        Ok::<_, ApiError>(())
    })
    .await
    .map_err(err)?;
    println!("operator: {operator_email}");
    if operator_generated {
        println!("  password: {operator_pw}");
    }
    println!("tenant: {slug} (id {tenant_id})");
    println!("owner: {owner_email}");
    if owner_generated {
        println!("  password: {owner_pw}");
    }
    println!(
        "default plan: \"Default\", prices {}",
        serde_json::to_string(&prices)?
    );
    if !config.pool.workers.is_empty() {
        println!("workers (pool.workers): {}", config.pool.workers.join(", "));
    } else if !config.redis_url.is_empty() {
        println!(
            "workers: none configured; `taogate worker` processes with this REDIS_URL and redis_prefix announce themselves"
        );
    } else {
        println!(
            "workers: none — set pool.workers (and pool.worker_secret) or REDIS_URL, and run `taogate worker`; until then chats answer 503 no_workers"
        );
    }
    println!(
        "next: POST /api/v1/auth/login {{\"email\": \"{owner_email}\", \"password\": …, \"tenant\": \"{slug}\"}}, then POST /api/v1/accounts and POST /api/v1/keys"
    );
    Ok(())
}
