//! Postpaid usage to Stripe Billing Meters. For each tenant that names a meter
//! (`meter_event_name` in its Stripe settings), every `payments.meter_every_ms` one replica's pass
//! sends each charged usage record of the tenant's postpaid accounts as one meter event: the
//! account's Stripe customer, `value` = the retail charge in nano-units, `timestamp` = when the
//! request ended, and `identifier` = the usage record's id — so a retry after an outage, a crash
//! or two replicas sending at once is never counted twice by Stripe (identifiers are unique there,
//! and the `Idempotency-Key` is the same). What was sent is recorded (`meter_pushes`); a failure
//! stops the tenant's pass and the next pass resumes from the first unsent record.
//!
//! Resuming: each tenant has a stored cursor; a pass looks at usage that started at or after it,
//! and when nothing older than `payments.meter_lag_secs` remains unsent, the cursor moves to
//! `now − lag` (a usage record reaches the database at most about that long after its request
//! started — longer only if a replica stays down with usage in its journal). Stripe takes events
//! up to 35 days old, so a first pass starts 35 days back.
//!
//! The tenant creates, in Stripe: a Billing Meter with `event_name` = `meter_event_name`,
//! aggregation `sum`, customer mapping `stripe_customer_id`, value key `value`; a metered Price on
//! that meter at its retail rate per nano-unit (e.g. USD at the default rate: 10^-7 cents, as
//! `unit_amount_decimal` "0.0000001"); and a subscription to that price for each postpaid customer.

use std::collections::HashMap;
use std::time::Duration;

use crate::db::Db;
use crate::domain::AccountId;
use crate::error::{ApiError, ApiResult};
use crate::models::account::Account;
use crate::models::payment::{MeterPush, ProviderSettings};

use super::{PaymentsConfig, stripe_account};

/// Usage records sent per tenant per pass.
const BATCH: i64 = 500;
/// How far back Stripe accepts meter events.
const STRIPE_WINDOW_DAYS: i64 = 35;

/// Runs the pusher on this replica.
pub fn spawn(db: Db, config: PaymentsConfig) {
    let every = Duration::from_millis(config.meter_every_ms);
    actix_web::rt::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            if let Err(e) = run_once(&db, &config).await {
                tracing::warn!(error = %e, "usage could not be pushed to Stripe meters");
            }
        }
    });
}

/// One pass over every metered tenant; how many events were sent.
pub async fn run_once(db: &Db, config: &PaymentsConfig) -> ApiResult<usize> {
    let tenants = db.run(ProviderSettings::metered).await?;
    let mut sent = 0;
    for settings in tenants {
        match push_tenant(db, config, &settings).await {
            Ok(n) => sent += n,
            Err(e) => {
                tracing::warn!(tenant = %settings.tenant_id, error = %e, "meter events not sent");
            }
        }
    }
    Ok(sent)
}

async fn push_tenant(
    db: &Db,
    config: &PaymentsConfig,
    settings: &ProviderSettings,
) -> ApiResult<usize> {
    let Some(event_name) = settings.meter_event_name.clone() else {
        return Ok(0);
    };
    let tenant = settings.tenant_id.clone();
    let now = crate::db::now();
    let floor = now - chrono::Duration::days(STRIPE_WINDOW_DAYS);
    let lag = chrono::Duration::seconds(config.meter_lag_secs as i64);
    let t = tenant.clone();
    let (since, batch) = db
        .run(move |c| {
            let since = MeterPush::cursor(c, &t)?.map_or(floor, |at| at.max(floor));
            Ok((since, MeterPush::unmetered(c, &t, since, BATCH)?))
        })
        .await?;
    if batch.is_empty() {
        let t = tenant.clone();
        db.write(move |c| Ok::<_, ApiError>(MeterPush::advance(c, &t, now - lag)?))
            .await?;
        return Ok(0);
    }
    let (_, api) = stripe_account::client(db, config, &tenant).await?;
    let mut customers: HashMap<AccountId, String> = HashMap::new();
    let mut sent = 0;
    for usage in &batch {
        let customer = match customers.get(&usage.account_id) {
            Some(c) => c.clone(),
            None => {
                let (t, a) = (tenant.clone(), usage.account_id.clone());
                let account = db.run(move |c| Account::find_in_tenant(c, &t, &a)).await?;
                let c = stripe_account::customer(db, &api, &account).await?;
                customers.insert(usage.account_id.clone(), c.clone());
                c
            }
        };
        api.create_meter_event(
            &event_name,
            &customer,
            usage.charged_nano.0,
            &usage.usage_id,
            usage.ended_at.and_utc().timestamp(),
        )
        .await
        .map_err(stripe_account::provider_error)?;
        let (t, u) = (tenant.clone(), usage.clone());
        db.write(move |c| Ok::<_, ApiError>(MeterPush::sent(c, &t, &u)?))
            .await?;
        sent += 1;
    }
    // All sent: the cursor may pass what is old enough to be complete.
    if (batch.len() as i64) < BATCH {
        let t = tenant.clone();
        let to = (now - lag).max(since);
        db.write(move |c| Ok::<_, ApiError>(MeterPush::advance(c, &t, to)?))
            .await?;
    }
    Ok(sent)
}
