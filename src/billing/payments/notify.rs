//! Telling tenants what happened to their money: an outbound webhook to the tenant's endpoint for
//! every top-up that succeeds or fails, refund, dispute, payment alert and low balance, each also
//! in the audit log. Notifications are written to an outbox in the transaction that caused them and
//! delivered by whichever replica claims them: a JSON event signed Stripe-style with the tenant's
//! own secret (`Taogate-Signature: t=…,v1=…`, HMAC-SHA256 of `t.body` — any Stripe library's
//! verifier checks it), retried with back-off (5 s doubling to 1 h, 12 attempts), redirects not
//! followed. The endpoint must resolve to a public address unless the operator allows private ones
//! (`payments.webhook_allow_private_targets`): a tenant cannot aim taogate at its internal network.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::auth::secrets::random_token;
use crate::db::{Db, DbConn};
use crate::domain::{AccountId, TenantId};
use crate::error::{ApiError, ApiResult};
use crate::limits::guard::Guard;
use crate::models::audit::{Actor, AuditEntry};
use crate::models::ledger::LedgerAccount;
use crate::models::notification::{BalanceAlert, TenantNotification, TenantWebhook};

use super::PaymentsConfig;
use super::seal::Sealer;
use super::signature;

/// The header carrying the signature.
pub const SIGNATURE_HEADER: &str = "Taogate-Signature";
/// Attempts before a notification is given up.
const MAX_ATTEMPTS: i32 = 12;
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);

fn context(tenant: &TenantId) -> String {
    format!("tenant_webhook.secret:{tenant}")
}

/// `PUT /api/v1/billing/webhook`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantWebhookInput {
    /// Where taogate posts its notifications (http or https).
    #[schema(max_length = 2048, pattern = "^https?://[^\\s]+$")]
    pub url: String,
    /// Make a new signing secret (shown once); the old one stops at once.
    #[serde(default)]
    pub rotate_secret: bool,
}

#[derive(Serialize, ToSchema)]
pub struct TenantWebhookView {
    pub object: &'static str,
    pub url: String,
    /// The signing secret's last characters.
    pub secret_hint: String,
    /// The signing secret, shown only when it is made (first set, or rotated).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// The header that carries the signature (`t=…,v1=…`, Stripe's scheme).
    pub signature_header: &'static str,
}

impl TenantWebhookView {
    pub fn of(hook: &TenantWebhook, secret: Option<String>) -> Self {
        Self {
            object: "tenant_webhook",
            url: hook.url.clone(),
            secret_hint: hook.secret_hint.clone(),
            secret,
            signature_header: SIGNATURE_HEADER,
        }
    }
}

/// Whether an address is one a tenant may not point taogate at.
fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || (a == 100 && (64..128).contains(&b))
                || a == 0
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || v6
                    .to_ipv4_mapped()
                    .is_some_and(|v4| is_private(IpAddr::V4(v4)))
        }
    }
}

/// Checks an endpoint URL's form.
pub fn check_url(url: &str) -> ApiResult<url::Url> {
    let parsed = url::Url::parse(url).ok().filter(|u| {
        matches!(u.scheme(), "http" | "https")
            && u.host().is_some()
            && u.username().is_empty()
            && u.password().is_none()
    });
    match parsed {
        Some(u) if url.len() <= 2048 => Ok(u),
        _ => Err(ApiError::invalid_param(
            "url",
            "url must be an http or https URL without credentials",
        )),
    }
}

/// Resolves the endpoint's host and refuses private addresses (unless allowed); the address to
/// connect to, pinned so a second resolution cannot change it.
async fn resolve(url: &url::Url, allow_private: bool) -> Result<SocketAddr, String> {
    let host = url.host_str().ok_or("no host")?;
    let port = url.port_or_known_default().ok_or("no port")?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|_| format!("{host} does not resolve"))?
        .collect();
    let first = *addrs
        .first()
        .ok_or_else(|| format!("{host} does not resolve"))?;
    if !allow_private && addrs.iter().any(|a| is_private(a.ip())) {
        return Err(format!("{host} resolves to a private address"));
    }
    Ok(first)
}

/// Sets (or replaces) the tenant's endpoint; the secret when one was made.
pub async fn configure(
    db: &Db,
    sealer: &Sealer,
    allow_private: bool,
    tenant: &TenantId,
    input: TenantWebhookInput,
) -> ApiResult<(TenantWebhook, Option<String>)> {
    let url = check_url(&input.url)?;
    resolve(&url, allow_private)
        .await
        .map_err(|why| ApiError::invalid_param("url", format!("url is not allowed: {why}")))?;
    let t = tenant.clone();
    let existing = db.run(move |c| TenantWebhook::find(c, &t)).await?;
    let (sealed, hint, shown) = match existing {
        Some(old) if !input.rotate_secret => (old.secret_sealed, old.secret_hint, None),
        _ => {
            let secret = format!("whsec_{}", random_token(24));
            let hint = format!("whsec_…{}", &secret[secret.len() - 4..]);
            (
                sealer.seal(secret.as_bytes(), &context(tenant)),
                hint,
                Some(secret),
            )
        }
    };
    let now = crate::db::now();
    let hook = TenantWebhook {
        tenant_id: tenant.clone(),
        url: input.url,
        secret_sealed: sealed,
        secret_hint: hint,
        created_at: now,
        updated_at: now,
    };
    let saved = db.write(move |c| Ok::<_, ApiError>(hook.save(c)?)).await?;
    Ok((saved, shown))
}

/// Queues a notification for the tenant, in the caller's transaction (nothing if the tenant has
/// no endpoint).
pub fn enqueue(
    conn: &mut DbConn,
    tenant: &TenantId,
    event_type: &str,
    data: Value,
) -> diesel::QueryResult<()> {
    if TenantWebhook::find(conn, tenant)?.is_none() {
        return Ok(());
    }
    let id = format!("evt_{}", uuid::Uuid::now_v7().simple());
    let now = crate::db::now();
    let payload = serde_json::json!({
        "id": id,
        "object": "event",
        "type": event_type,
        "created": now.and_utc().timestamp(),
        "tenant_id": tenant,
        "data": data,
    });
    TenantNotification {
        id,
        tenant_id: tenant.clone(),
        event_type: event_type.to_owned(),
        payload: payload.to_string(),
        attempts: 0,
        next_attempt_at: now,
        delivered_at: None,
        done: false,
        last_error: None,
        created_at: now,
    }
    .insert(conn)
}

/// How long to wait after the `attempts`-th failed delivery.
fn retry_after(attempts: i32) -> Duration {
    let exp = attempts.clamp(1, 20) as u32 - 1;
    Duration::from_secs(5u64.saturating_mul(1 << exp)).min(Duration::from_secs(3600))
}

/// Delivers what is due, every second, on this replica.
pub fn spawn_sender(db: Db, config: PaymentsConfig) {
    actix_web::rt::spawn(async move {
        let Some(sealer) = config.sealer() else {
            return;
        };
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if let Err(e) = deliver_due(&db, &sealer, config.webhook_allow_private_targets).await {
                tracing::warn!(error = %e, "tenant notifications could not be delivered");
            }
        }
    });
}

/// One pass over the due notifications; how many were delivered.
pub async fn deliver_due(db: &Db, sealer: &Sealer, allow_private: bool) -> ApiResult<usize> {
    let due = db
        .run(|c| TenantNotification::due(c, crate::db::now(), 100))
        .await?;
    let mut delivered = 0;
    for n in due {
        let id = n.id.clone();
        let now = crate::db::now();
        let lease = now + chrono::Duration::seconds(60);
        if !db
            .write(move |c| Ok::<_, ApiError>(TenantNotification::claim(c, &id, now, lease)?))
            .await?
        {
            continue;
        }
        let tenant = n.tenant_id.clone();
        let hook = db.run(move |c| TenantWebhook::find(c, &tenant)).await?;
        let result = match &hook {
            None => Err("the tenant has no webhook endpoint".to_owned()),
            Some(hook) => send(hook, sealer, &n.payload, allow_private).await,
        };
        let id = n.id.clone();
        let attempts = n.attempts + 1;
        match result {
            Ok(()) => {
                delivered += 1;
                db.write(move |c| Ok::<_, ApiError>(TenantNotification::delivered(c, &id)?))
                    .await?;
            }
            Err(why) => {
                tracing::info!(notification = %n.id, attempts, error = %why, "tenant notification not delivered");
                let retry = (attempts < MAX_ATTEMPTS).then(|| {
                    crate::db::now()
                        + chrono::Duration::from_std(retry_after(attempts))
                            .unwrap_or(chrono::Duration::hours(1))
                });
                db.write(move |c| {
                    Ok::<_, ApiError>(TenantNotification::failed(c, &id, &why, retry)?)
                })
                .await?;
            }
        }
    }
    Ok(delivered)
}

async fn send(
    hook: &TenantWebhook,
    sealer: &Sealer,
    payload: &str,
    allow_private: bool,
) -> Result<(), String> {
    let secret = sealer
        .open(&hook.secret_sealed, &context(&hook.tenant_id))
        .map_err(|e| e.to_string())?;
    let secret = String::from_utf8(secret).map_err(|_| "the secret is not UTF-8".to_owned())?;
    let url = check_url(&hook.url).map_err(|e| e.to_string())?;
    let addr = resolve(&url, allow_private).await?;
    let host = url.host_str().unwrap_or_default().to_owned();
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(DELIVERY_TIMEOUT)
        .resolve(&host, addr)
        .build()
        .map_err(|e| e.to_string())?;
    let header = signature::sign(payload.as_bytes(), &secret, chrono::Utc::now().timestamp());
    let res = client
        .post(url)
        .header("content-type", "application/json")
        .header(SIGNATURE_HEADER, header)
        .body(payload.to_owned())
        .send()
        .await
        .map_err(|e| format!("the endpoint could not be reached: {}", e.without_url()))?;
    if res.status().is_success() {
        Ok(())
    } else {
        Err(format!("the endpoint answered {}", res.status().as_u16()))
    }
}

/// Checks every low-balance alert: an account whose spendable balance fell below its threshold is
/// reported once (audit `account.low_balance` and a notification) until it is back above.
pub async fn check_balances(db: &Db, limiter: &Arc<Guard>) -> ApiResult<usize> {
    let alerts = db.run(BalanceAlert::all).await?;
    let mut reported = 0;
    for alert in alerts {
        let id = alert.account_id.clone();
        let (balance, _) = db
            .run(move |c| LedgerAccount::customer_state(c, &id))
            .await?;
        let spendable = spendable(limiter, &alert.tenant_id, &alert.account_id, balance.0).await;
        let below = spendable < alert.threshold_nano.0;
        if below == alert.below {
            continue;
        }
        let crossed = db
            .write(move |c| {
                if !BalanceAlert::cross(c, &alert.account_id, below)? {
                    return Ok::<_, ApiError>(false);
                }
                if below {
                    let data = serde_json::json!({"account_id": alert.account_id,
                        "spendable_nano": spendable, "threshold_nano": alert.threshold_nano});
                    AuditEntry::record(
                        c,
                        &system(),
                        Some(&alert.tenant_id),
                        "account.low_balance",
                        ("account", alert.account_id.as_str()),
                        data.clone(),
                    )?;
                    enqueue(c, &alert.tenant_id, "account.low_balance", data)?;
                }
                Ok(below)
            })
            .await?;
        reported += usize::from(crossed);
    }
    Ok(reported)
}

/// An account's spendable balance: its ledger balance less what is held and pending.
pub async fn spendable(
    limiter: &Arc<Guard>,
    tenant: &TenantId,
    account: &AccountId,
    balance: i64,
) -> i64 {
    let in_flight = limiter
        .balance(tenant, account)
        .await
        .ok()
        .flatten()
        .map(|(r, _)| r.held.0.saturating_add(r.pending.0))
        .unwrap_or(0);
    balance.saturating_sub(in_flight)
}

/// The actor of what taogate does on its own.
pub fn system() -> Actor {
    Actor {
        user_id: None,
        role: None,
        ip: None,
        request_id: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_and_special_addresses_are_refused() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(is_private(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["8.8.8.8", "1.1.1.1", "2606:4700::1111"] {
            assert!(!is_private(ip.parse().unwrap()), "{ip}");
        }
        assert_eq!(retry_after(1), Duration::from_secs(5));
        assert_eq!(retry_after(3), Duration::from_secs(20));
        assert_eq!(retry_after(12), Duration::from_secs(3600));
    }
}
