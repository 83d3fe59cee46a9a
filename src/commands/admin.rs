//! `taogate admin …`: bootstrap operations run from a shell on the deployment (audited as the CLI).

use crate::auth::password;
use crate::config::Config;
use crate::domain::Role;
use crate::error::{ApiError, ResultExt};
use crate::models::audit::{Actor, AuditEntry};
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
