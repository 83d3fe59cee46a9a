//! Payments as stored: a tenant's provider settings (secrets sealed), every provider notification
//! raw, each payment with its state, the ledger movements it caused and the provider's customer
//! for an account. Rules (who may, what moves) live in [`crate::billing::payments`].

use chrono::NaiveDateTime;
use diesel::prelude::*;

use crate::db::DbConn;
use crate::db::schema::{
    accounts, auto_topups, meter_cursors, meter_pushes, payment_customers, payment_movements,
    payment_notifications, payment_providers, payments, usage_records,
};
use crate::domain::{
    AccountId, BillingMode, DisputePolicy, MovementKind, Nano, PaymentId, PaymentKind,
    PaymentState, TenantId,
};

fn is_unique_violation(e: &diesel::result::Error) -> bool {
    matches!(
        e,
        diesel::result::Error::DatabaseError(diesel::result::DatabaseErrorKind::UniqueViolation, _)
    )
}

/// A tenant's settings for one provider.
#[derive(Clone, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = payment_providers)]
pub struct ProviderSettings {
    pub tenant_id: TenantId,
    pub provider: String,
    pub secret_key_sealed: String,
    /// What may be shown of the secret key (`sk_test_…1234`).
    pub secret_key_hint: String,
    pub webhook_secrets_sealed: String,
    pub webhook_secret_count: i32,
    /// ISO 4217, lowercase.
    pub currency: String,
    /// Nano-units credited per whole currency unit.
    pub nano_per_unit: i64,
    pub min_topup_nano: Nano,
    pub max_topup_nano: Nano,
    pub dispute_policy: DisputePolicy,
    /// Postpaid usage goes to this Stripe Billing Meter (its event name), if set.
    pub meter_event_name: Option<String>,
    /// A self-hosted provider's server (BTCPay's base URL).
    pub server_url: Option<String>,
    /// The tenant's store on it.
    pub store_id: Option<String>,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
    /// A provider's public API key id (Coinbase: the CDP key name, the JWT's `kid`).
    pub api_key_id: Option<String>,
    /// Coinbase: `business` (Checkouts) or `commerce` (legacy charges).
    pub api_kind: Option<String>,
    /// TAO: `feed` when priced by the operator's price endpoint; `None`: `nano_per_unit`.
    pub rate_source: Option<String>,
}

impl ProviderSettings {
    /// Settings for `provider` with nothing sealed yet and the defaults — top-ups of any size in
    /// the amount range, disputes debited, no meter, server or key id — for each provider's input
    /// to fill in.
    pub fn new(tenant: &TenantId, provider: &str, currency: String, nano_per_unit: i64) -> Self {
        let now = crate::db::now();
        Self {
            tenant_id: tenant.clone(),
            provider: provider.to_owned(),
            secret_key_sealed: String::new(),
            secret_key_hint: String::new(),
            webhook_secrets_sealed: String::new(),
            webhook_secret_count: 0,
            currency,
            nano_per_unit,
            min_topup_nano: Nano(1),
            max_topup_nano: Nano(crate::billing::amount::MAX_AMOUNT_NANO),
            dispute_policy: DisputePolicy::Debit,
            meter_event_name: None,
            server_url: None,
            store_id: None,
            created_at: now,
            updated_at: now,
            api_key_id: None,
            api_kind: None,
            rate_source: None,
        }
    }

    /// (provider, currency) of every provider the tenant has set up.
    pub fn currencies(conn: &mut DbConn, tenant: &TenantId) -> QueryResult<Vec<(String, String)>> {
        payment_providers::table
            .filter(payment_providers::tenant_id.eq(tenant))
            .select((payment_providers::provider, payment_providers::currency))
            .load(conn)
    }

    pub fn find(conn: &mut DbConn, tenant: &TenantId, provider: &str) -> QueryResult<Option<Self>> {
        payment_providers::table
            .find((tenant, provider))
            .select(Self::as_select())
            .first(conn)
            .optional()
    }

    /// Inserts or replaces the tenant's settings (keeping the first `created_at`).
    pub fn save(mut self, conn: &mut DbConn) -> QueryResult<Self> {
        if let Some(old) = Self::find(conn, &self.tenant_id, &self.provider)? {
            self.created_at = old.created_at;
            diesel::update(payment_providers::table.find((&self.tenant_id, &self.provider)))
                .set(&self)
                .execute(conn)?;
        } else {
            diesel::insert_into(payment_providers::table)
                .values(&self)
                .execute(conn)?;
        }
        Ok(self)
    }
}

/// A provider notification, stored raw before anything is done with it.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = payment_notifications)]
pub struct Notification {
    pub id: String,
    pub provider: String,
    pub event_id: String,
    pub tenant_id: TenantId,
    pub event_type: String,
    pub payload: String,
    pub payload_sha256: String,
    pub received_at: NaiveDateTime,
    pub processed_at: Option<NaiveDateTime>,
    pub outcome: Option<String>,
}

/// What storing a notification found.
pub enum Stored {
    /// First delivery.
    New(Notification),
    /// Delivered before: the first stored copy.
    Again(Notification),
}

impl Notification {
    /// Stores it once per (provider, event id); a repeat returns the first copy.
    pub fn store(self, conn: &mut DbConn) -> QueryResult<Stored> {
        let inserted = conn.transaction(|c| {
            diesel::insert_into(payment_notifications::table)
                .values(&self)
                .execute(c)
        });
        match inserted {
            Ok(_) => Ok(Stored::New(self)),
            Err(e) if is_unique_violation(&e) => payment_notifications::table
                .filter(
                    payment_notifications::provider
                        .eq(&self.provider)
                        .and(payment_notifications::event_id.eq(&self.event_id)),
                )
                .select(Self::as_select())
                .first(conn)
                .map(Stored::Again),
            Err(e) => Err(e),
        }
    }

    /// Records what processing did (the last processing wins; the money moved at most once).
    pub fn processed(conn: &mut DbConn, id: &str, outcome: &str) -> QueryResult<()> {
        diesel::update(payment_notifications::table.find(id))
            .set((
                payment_notifications::processed_at.eq(Some(crate::db::now())),
                payment_notifications::outcome.eq(Some(outcome)),
            ))
            .execute(conn)
            .map(drop)
    }

    /// Stored notifications never applied, received before `before`, oldest first.
    pub fn unprocessed(conn: &mut DbConn, before: NaiveDateTime) -> QueryResult<Vec<Self>> {
        payment_notifications::table
            .filter(
                payment_notifications::processed_at
                    .is_null()
                    .and(payment_notifications::received_at.lt(before)),
            )
            .order(payment_notifications::received_at.asc())
            .select(Self::as_select())
            .load(conn)
    }

    /// A tenant's notifications of one provider, oldest first (reconciliation).
    pub fn of_tenant(
        conn: &mut DbConn,
        tenant: &TenantId,
        provider: &str,
    ) -> QueryResult<Vec<Self>> {
        payment_notifications::table
            .filter(
                payment_notifications::tenant_id
                    .eq(tenant)
                    .and(payment_notifications::provider.eq(provider)),
            )
            .order(payment_notifications::received_at.asc())
            .select(Self::as_select())
            .load(conn)
    }
}

/// One payment into an account.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = payments)]
pub struct Payment {
    pub id: PaymentId,
    pub tenant_id: TenantId,
    pub account_id: AccountId,
    pub provider: String,
    pub kind: PaymentKind,
    pub reference: Option<String>,
    pub session_id: Option<String>,
    pub state: PaymentState,
    pub currency: String,
    pub requested_minor: i64,
    pub paid_minor: i64,
    pub refunded_minor: i64,
    pub credited_nano: Nano,
    pub created_by: Option<String>,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

/// How to find a payment from a notification.
pub enum PaymentRef<'a> {
    Reference(&'a str),
    Session(&'a str),
}

impl Payment {
    pub fn insert(&self, conn: &mut DbConn) -> QueryResult<()> {
        diesel::insert_into(payments::table)
            .values(self)
            .execute(conn)
            .map(drop)
    }

    /// Inserts it; `false` if a unique index refused it (an automatic top-up already pending).
    pub fn insert_unless_pending(&self, conn: &mut DbConn) -> QueryResult<bool> {
        match conn.transaction(|c| self.insert(c)) {
            Ok(()) => Ok(true),
            Err(e) if is_unique_violation(&e) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Inserts it unless a payment with its reference or session exists (a concurrent delivery
    /// made it first); either way, the stored payment.
    pub fn insert_or_find(self, conn: &mut DbConn) -> QueryResult<Self> {
        let inserted = conn.transaction(|c| self.insert(c));
        match inserted {
            Ok(()) => Ok(self),
            Err(e) if is_unique_violation(&e) => {
                let by = match (&self.reference, &self.session_id) {
                    (Some(r), _) => PaymentRef::Reference(r),
                    (None, Some(s)) => PaymentRef::Session(s),
                    (None, None) => return Err(e),
                };
                Self::find(conn, &self.provider, by)?.ok_or(e)
            }
            Err(e) => Err(e),
        }
    }

    pub fn find(
        conn: &mut DbConn,
        provider: &str,
        by: PaymentRef<'_>,
    ) -> QueryResult<Option<Self>> {
        let query = payments::table
            .filter(payments::provider.eq(provider))
            .select(Self::as_select())
            .into_boxed();
        let query = match by {
            PaymentRef::Reference(r) => query.filter(payments::reference.eq(r)),
            PaymentRef::Session(s) => query.filter(payments::session_id.eq(s)),
        };
        query.first(conn).optional()
    }

    pub fn find_in_tenant(
        conn: &mut DbConn,
        tenant: &TenantId,
        id: &PaymentId,
    ) -> QueryResult<Option<Self>> {
        payments::table
            .filter(payments::id.eq(id).and(payments::tenant_id.eq(tenant)))
            .select(Self::as_select())
            .first(conn)
            .optional()
    }

    /// Takes the payment's row lock (PostgreSQL; SQLite writes one at a time) and reads it as
    /// committed now: concurrent notifications about one payment apply one after another.
    pub fn lock(conn: &mut DbConn, id: &PaymentId) -> QueryResult<Self> {
        diesel::update(payments::table.find(id))
            .set(payments::updated_at.eq(payments::updated_at))
            .execute(conn)?;
        payments::table
            .find(id)
            .select(Self::as_select())
            .first(conn)
    }

    /// Writes the fields a notification may change.
    pub fn save_progress(&self, conn: &mut DbConn) -> QueryResult<()> {
        diesel::update(payments::table.find(&self.id))
            .set((
                payments::state.eq(self.state),
                payments::reference.eq(&self.reference),
                payments::session_id.eq(&self.session_id),
                payments::paid_minor.eq(self.paid_minor),
                payments::refunded_minor.eq(self.refunded_minor),
                payments::credited_nano.eq(self.credited_nano),
                payments::updated_at.eq(crate::db::now()),
            ))
            .execute(conn)
            .map(drop)
    }

    /// Records what the provider gave a started payment (its session or reference), leaving its
    /// state alone: a notification may already have moved it on.
    pub fn started(
        conn: &mut DbConn,
        id: &PaymentId,
        session: Option<&str>,
        reference: Option<&str>,
    ) -> QueryResult<()> {
        if let Some(session) = session {
            diesel::update(payments::table.find(id))
                .set(payments::session_id.eq(session))
                .execute(conn)?;
        }
        if let Some(reference) = reference {
            diesel::update(
                payments::table
                    .find(id)
                    .filter(payments::reference.is_null()),
            )
            .set(payments::reference.eq(reference))
            .execute(conn)?;
        }
        Ok(())
    }

    /// Marks a payment that could not be started failed, unless something moved it on already;
    /// whether it did.
    pub fn abandon(conn: &mut DbConn, id: &PaymentId) -> QueryResult<bool> {
        diesel::update(
            payments::table
                .find(id)
                .filter(payments::state.eq(PaymentState::Pending)),
        )
        .set((
            payments::state.eq(PaymentState::Failed),
            payments::updated_at.eq(crate::db::now()),
        ))
        .execute(conn)
        .map(|n| n == 1)
    }

    /// An account's payments, oldest first, after the cursor `after` (an id; empty: the first).
    pub fn list(
        conn: &mut DbConn,
        tenant: &TenantId,
        account: &AccountId,
        after: &str,
        limit: i64,
    ) -> QueryResult<Vec<Self>> {
        payments::table
            .filter(
                payments::tenant_id
                    .eq(tenant)
                    .and(payments::account_id.eq(account))
                    .and(payments::id.gt(after)),
            )
            .select(Self::as_select())
            .order(payments::id.asc())
            .limit(limit + 1)
            .load(conn)
    }

    /// Whether an account has a payment still pending of `kind` (auto top-up: one at a time).
    pub fn pending_of_kind(
        conn: &mut DbConn,
        account: &AccountId,
        kind: PaymentKind,
    ) -> QueryResult<bool> {
        diesel::select(diesel::dsl::exists(
            payments::table.filter(
                payments::account_id
                    .eq(account)
                    .and(payments::kind.eq(kind))
                    .and(payments::state.eq(PaymentState::Pending)),
            ),
        ))
        .get_result(conn)
    }
}

/// A ledger transaction caused by a payment.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = payment_movements)]
pub struct Movement {
    pub id: String,
    pub payment_id: PaymentId,
    pub kind: MovementKind,
    pub transaction_id: String,
    pub provider_ref: String,
    pub amount_minor: i64,
    pub amount_nano: Nano,
    pub created_at: NaiveDateTime,
}

impl Movement {
    pub fn insert(&self, conn: &mut DbConn) -> QueryResult<()> {
        diesel::insert_into(payment_movements::table)
            .values(self)
            .execute(conn)
            .map(drop)
    }

    pub fn of_payment(conn: &mut DbConn, payment: &PaymentId) -> QueryResult<Vec<Self>> {
        payment_movements::table
            .filter(payment_movements::payment_id.eq(payment))
            .order(payment_movements::id.asc())
            .select(Self::as_select())
            .load(conn)
    }
}

/// The provider's customer object for an account.
pub struct Customer;

impl Customer {
    pub fn find(
        conn: &mut DbConn,
        account: &AccountId,
        provider: &str,
    ) -> QueryResult<Option<String>> {
        payment_customers::table
            .find((account, provider))
            .select(payment_customers::customer_id)
            .first(conn)
            .optional()
    }

    /// Records the account's customer; if another request recorded one first, that one.
    pub fn remember(
        conn: &mut DbConn,
        tenant: &TenantId,
        account: &AccountId,
        provider: &str,
        customer: &str,
    ) -> QueryResult<String> {
        let inserted = conn.transaction(|c| {
            diesel::insert_into(payment_customers::table)
                .values((
                    payment_customers::account_id.eq(account),
                    payment_customers::provider.eq(provider),
                    payment_customers::tenant_id.eq(tenant),
                    payment_customers::customer_id.eq(customer),
                    payment_customers::created_at.eq(crate::db::now()),
                ))
                .execute(c)
        });
        match inserted {
            Ok(_) => Ok(customer.to_owned()),
            Err(e) if is_unique_violation(&e) => Self::find(conn, account, provider)?.ok_or(e),
            Err(e) => Err(e),
        }
    }
}

/// An account's automatic top-up rule and its recent failures.
#[derive(Debug, Clone, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = auto_topups)]
pub struct AutoTopup {
    pub account_id: AccountId,
    pub tenant_id: TenantId,
    pub enabled: bool,
    pub threshold_nano: Nano,
    pub amount_nano: Nano,
    pub failures: i32,
    pub next_attempt_at: Option<NaiveDateTime>,
    pub last_error: Option<String>,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

impl AutoTopup {
    pub fn find(conn: &mut DbConn, account: &AccountId) -> QueryResult<Option<Self>> {
        auto_topups::table
            .find(account)
            .select(Self::as_select())
            .first(conn)
            .optional()
    }

    /// Inserts or replaces the rule (keeping `created_at`; a new rule starts without failures).
    pub fn save(mut self, conn: &mut DbConn) -> QueryResult<Self> {
        if let Some(old) = Self::find(conn, &self.account_id)? {
            self.created_at = old.created_at;
            diesel::update(auto_topups::table.find(&self.account_id))
                .set(&self)
                .execute(conn)?;
        } else {
            diesel::insert_into(auto_topups::table)
                .values(&self)
                .execute(conn)?;
        }
        Ok(self)
    }

    /// Enabled rules whose back-off (if any) has passed.
    pub fn due(conn: &mut DbConn, now: NaiveDateTime) -> QueryResult<Vec<Self>> {
        auto_topups::table
            .filter(
                auto_topups::enabled.eq(true).and(
                    auto_topups::next_attempt_at
                        .is_null()
                        .or(auto_topups::next_attempt_at.le(now)),
                ),
            )
            .select(Self::as_select())
            .load(conn)
    }

    /// Records a failed attempt: the next one waits `retry_at`.
    pub fn failed(
        conn: &mut DbConn,
        account: &AccountId,
        error: &str,
        retry_at: NaiveDateTime,
    ) -> QueryResult<()> {
        diesel::update(auto_topups::table.find(account))
            .set((
                auto_topups::failures.eq(auto_topups::failures + 1),
                auto_topups::next_attempt_at.eq(Some(retry_at)),
                auto_topups::last_error.eq(Some(error)),
                auto_topups::updated_at.eq(crate::db::now()),
            ))
            .execute(conn)
            .map(drop)
    }

    /// A top-up succeeded: failures are forgotten.
    pub fn succeeded(conn: &mut DbConn, account: &AccountId) -> QueryResult<()> {
        diesel::update(auto_topups::table.find(account))
            .set((
                auto_topups::failures.eq(0),
                auto_topups::next_attempt_at.eq(None::<NaiveDateTime>),
                auto_topups::last_error.eq(None::<String>),
            ))
            .execute(conn)
            .map(drop)
    }
}

/// A postpaid usage record not yet sent to the tenant's Billing Meter.
#[derive(Debug, Clone, Queryable)]
pub struct Unmetered {
    pub usage_id: String,
    pub account_id: AccountId,
    pub charged_nano: Nano,
    pub ended_at: NaiveDateTime,
    pub started_at: NaiveDateTime,
}

/// Usage sent to Stripe Billing Meters, and each tenant's cursor.
pub struct MeterPush;

impl MeterPush {
    /// The tenant's charged usage of postpaid accounts that started at or after `since` and has
    /// not been sent, oldest first.
    pub fn unmetered(
        conn: &mut DbConn,
        tenant: &TenantId,
        since: NaiveDateTime,
        limit: i64,
    ) -> QueryResult<Vec<Unmetered>> {
        let postpaid = accounts::table
            .filter(
                accounts::tenant_id
                    .eq(tenant)
                    .and(accounts::billing_mode.eq(BillingMode::Postpaid)),
            )
            .select(accounts::id);
        let sent = meter_pushes::table
            .filter(meter_pushes::usage_id.eq(usage_records::id))
            .select(meter_pushes::usage_id);
        usage_records::table
            .filter(
                usage_records::tenant_id
                    .eq(tenant)
                    .and(usage_records::started_at.ge(since))
                    .and(usage_records::charged_nano.gt(0))
                    .and(usage_records::account_id.eq_any(postpaid))
                    .and(diesel::dsl::not(diesel::dsl::exists(sent))),
            )
            .order((usage_records::started_at.asc(), usage_records::id.asc()))
            .limit(limit)
            .select((
                usage_records::id,
                usage_records::account_id,
                usage_records::charged_nano,
                usage_records::ended_at,
                usage_records::started_at,
            ))
            .load(conn)
    }

    /// Records that a usage record was sent (once: another replica may have sent it too, and
    /// Stripe counted it once by its identifier).
    pub fn sent(conn: &mut DbConn, tenant: &TenantId, usage: &Unmetered) -> QueryResult<()> {
        let inserted = conn.transaction(|c| {
            diesel::insert_into(meter_pushes::table)
                .values((
                    meter_pushes::usage_id.eq(&usage.usage_id),
                    meter_pushes::tenant_id.eq(tenant),
                    meter_pushes::account_id.eq(&usage.account_id),
                    meter_pushes::value_nano.eq(usage.charged_nano),
                    meter_pushes::pushed_at.eq(crate::db::now()),
                ))
                .execute(c)
        });
        match inserted {
            Err(e) if !is_unique_violation(&e) => Err(e),
            _ => Ok(()),
        }
    }

    /// Where the tenant's next scan starts, if it scanned before.
    pub fn cursor(conn: &mut DbConn, tenant: &TenantId) -> QueryResult<Option<NaiveDateTime>> {
        meter_cursors::table
            .find(tenant)
            .select(meter_cursors::scanned_before)
            .first(conn)
            .optional()
    }

    /// Moves the tenant's cursor forward (never back).
    pub fn advance(conn: &mut DbConn, tenant: &TenantId, to: NaiveDateTime) -> QueryResult<()> {
        match Self::cursor(conn, tenant)? {
            Some(at) if at >= to => Ok(()),
            Some(_) => diesel::update(meter_cursors::table.find(tenant))
                .set((
                    meter_cursors::scanned_before.eq(to),
                    meter_cursors::updated_at.eq(crate::db::now()),
                ))
                .execute(conn)
                .map(drop),
            None => diesel::insert_into(meter_cursors::table)
                .values((
                    meter_cursors::tenant_id.eq(tenant),
                    meter_cursors::scanned_before.eq(to),
                    meter_cursors::updated_at.eq(crate::db::now()),
                ))
                .execute(conn)
                .map(drop),
        }
    }
}

impl ProviderSettings {
    /// The tenant's own (custom) providers.
    pub fn custom_of(conn: &mut DbConn, tenant: &TenantId) -> QueryResult<Vec<Self>> {
        payment_providers::table
            .filter(
                payment_providers::tenant_id
                    .eq(tenant)
                    .and(payment_providers::provider.like("custom:%")),
            )
            .order(payment_providers::provider.asc())
            .select(Self::as_select())
            .load(conn)
    }

    /// Every tenant's settings that push usage to a meter.
    pub fn metered(conn: &mut DbConn) -> QueryResult<Vec<Self>> {
        payment_providers::table
            .filter(payment_providers::meter_event_name.is_not_null())
            .select(Self::as_select())
            .load(conn)
    }
}
