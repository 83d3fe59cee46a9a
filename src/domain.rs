//! Domain newtypes: typed ids, roles and statuses, money in nano-units. Each maps to a column type
//! both backends share (`TEXT`, `BIGINT`) through generic diesel impls, so models stay typed end to end.

use std::fmt;

use diesel::backend::Backend;
use diesel::deserialize::{self, FromSql};
use diesel::serialize::{self, Output, ToSql};
use diesel::sql_types::{BigInt, Text};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Generic `TEXT` column mapping for a type with `as_str()` and `from_db(String)`.
macro_rules! text_column {
    ($ty:ident) => {
        impl<DB> ToSql<Text, DB> for $ty
        where
            DB: Backend,
            str: ToSql<Text, DB>,
        {
            fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, DB>) -> serialize::Result {
                self.as_str().to_sql(out)
            }
        }

        impl<DB> FromSql<Text, DB> for $ty
        where
            DB: Backend,
            String: FromSql<Text, DB>,
        {
            fn from_sql(bytes: DB::RawValue<'_>) -> deserialize::Result<Self> {
                $ty::from_db(String::from_sql(bytes)?).map_err(Into::into)
            }
        }
    };
}

/// An opaque id: a UUIDv7 (time-ordered) in its hyphenated text form.
macro_rules! id_type {
    ($($name:ident),* $(,)?) => {$(
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
        #[derive(diesel::expression::AsExpression, diesel::deserialize::FromSqlRow)]
        #[diesel(sql_type = Text)]
        #[serde(transparent)]
        #[schema(value_type = String)]
        pub struct $name(String);

        impl $name {
            pub fn generate() -> Self {
                Self(uuid::Uuid::now_v7().hyphenated().to_string())
            }

            /// Parses a client-supplied id: a hyphenated UUID (the form taogate hands out, see
            /// [`crate::validate::UUID_PATTERN`]); anything else is `None` (and so "not found").
            pub fn parse(s: &str) -> Option<Self> {
                (s.len() == 36)
                    .then(|| uuid::Uuid::parse_str(s).ok())
                    .flatten()
                    .map(|u| Self(u.hyphenated().to_string()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl $name {
            fn from_db(s: String) -> Result<Self, String> {
                Ok(Self(s))
            }
        }

        text_column!($name);
    )*};
}

id_type!(
    TenantId,
    AccountId,
    UserId,
    ApiKeyId,
    PlanId,
    LedgerAccountId,
    PaymentId
);

/// A closed set of lowercase string values stored as `TEXT`.
macro_rules! text_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident = $text:literal),* $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
        #[derive(diesel::expression::AsExpression, diesel::deserialize::FromSqlRow)]
        #[diesel(sql_type = Text)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($variant),* }

        impl $name {
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $text),* }
            }

            pub fn parse(s: &str) -> Result<Self, String> {
                match s {
                    $($text => Ok(Self::$variant),)*
                    other => Err(format!("unknown {} `{other}`", stringify!($name))),
                }
            }
        }

        impl $name {
            fn from_db(s: String) -> Result<Self, String> {
                Self::parse(&s)
            }
        }

        text_column!($name);
    };
}

text_enum!(
    /// What a user may do. `operator` is the platform admin (no tenant); the others belong to one
    /// tenant, and a `developer` to one account of it.
    Role { Operator = "operator", Owner = "owner", Admin = "admin", Finance = "finance", Developer = "developer" }
);

impl Role {
    /// Owners and admins manage a tenant's accounts, users and every key.
    pub fn manages_tenant(self) -> bool {
        matches!(self, Role::Owner | Role::Admin)
    }
}

text_enum!(
    /// Lifecycle of a tenant or account.
    ActiveStatus { Active = "active", Suspended = "suspended" }
);

text_enum!(
    /// Lifecycle of a user.
    UserStatus { Active = "active", Disabled = "disabled" }
);

text_enum!(
    /// Stored state of an API key; expiry is computed from `expires_at`.
    KeyStatus { Active = "active", Revoked = "revoked" }
);

text_enum!(
    /// Whose ledger account it is.
    LedgerOwner { Account = "account", Tenant = "tenant", Operator = "operator" }
);

text_enum!(
    /// What a ledger account holds. A customer's balance is credit-positive; the tenant's revenue
    /// and payable and the operator's revenue are their counterparts; clearing and adjustments are
    /// where money enters (payments, manual corrections).
    LedgerPurpose {
        CustomerBalance = "customer_balance",
        TenantRevenue = "tenant_revenue",
        TenantPayable = "tenant_payable",
        OperatorRevenue = "operator_revenue",
        PaymentClearing = "payment_clearing",
        Adjustments = "adjustments",
    }
);

text_enum!(
    /// Why money moved.
    TransactionKind { Usage = "usage", Topup = "topup", Adjustment = "adjustment" }
);

text_enum!(
    /// Where a usage record's billed token counts came from: the upstream's own `usage` (within
    /// the bounds), the gateway's count (the upstream reported none, or the request was cut
    /// short), or the gateway's count because the upstream's was out of bounds
    /// (`crate::billing::bounds`).
    UsageSource { Upstream = "upstream", Counted = "counted", Clamped = "clamped" }
);

text_enum!(
    /// Where a payment stands. Forward only (`crate::billing::payments::state`): pending →
    /// succeeded | failed | expired; succeeded → partially_refunded | refunded | disputed;
    /// disputed → dispute_won | dispute_lost.
    PaymentState {
        Pending = "pending",
        Succeeded = "succeeded",
        Failed = "failed",
        Expired = "expired",
        PartiallyRefunded = "partially_refunded",
        Refunded = "refunded",
        Disputed = "disputed",
        DisputeWon = "dispute_won",
        DisputeLost = "dispute_lost",
    }
);

text_enum!(
    /// How a payment started: a Checkout top-up, an automatic top-up, or found in a provider's
    /// notification without a record of ours (a payment made in the provider's dashboard).
    PaymentKind { Checkout = "checkout", AutoTopup = "auto_topup", External = "external" }
);

text_enum!(
    /// What a payment's ledger transaction did.
    MovementKind {
        Credit = "credit",
        Refund = "refund",
        Dispute = "dispute",
        DisputeReversal = "dispute_reversal",
    }
);

text_enum!(
    /// What a dispute does to the account besides debiting it.
    DisputePolicy { Debit = "debit", DebitAndSuspend = "debit_and_suspend" }
);

text_enum!(
    /// How an account pays: from a balance, or on credit up to a limit.
    BillingMode { Prepaid = "prepaid", Postpaid = "postpaid" }
);

/// Money in nano-units: 1e-9 of the currency unit, as an `i64`. Never a float; ranges in
/// [`crate::billing::amount`].
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Serialize,
    ToSchema,
    diesel::expression::AsExpression,
    diesel::deserialize::FromSqlRow,
)]
#[diesel(sql_type = BigInt)]
#[serde(transparent)]
pub struct Nano(pub i64);

/// A JSON integer; one beyond `i64` saturates so the range check names its field
/// ([`crate::billing::amount::saturating`]).
impl<'de> Deserialize<'de> for Nano {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        crate::billing::amount::saturating(de).map(Nano)
    }
}

/// Currency units, exact: `1.5`, `-0.000000001`, `12`.
impl fmt::Display for Nano {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (sign, abs) = if self.0 < 0 {
            ("-", self.0.unsigned_abs())
        } else {
            ("", self.0 as u64)
        };
        let (whole, frac) = (abs / 1_000_000_000, abs % 1_000_000_000);
        if frac == 0 {
            return write!(f, "{sign}{whole}");
        }
        let frac = format!("{frac:09}");
        write!(f, "{sign}{whole}.{}", frac.trim_end_matches('0'))
    }
}

impl<DB> ToSql<BigInt, DB> for Nano
where
    DB: Backend,
    i64: ToSql<BigInt, DB>,
{
    fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, DB>) -> serialize::Result {
        self.0.to_sql(out)
    }
}

impl<DB> FromSql<BigInt, DB> for Nano
where
    DB: Backend,
    i64: FromSql<BigInt, DB>,
{
    fn from_sql(bytes: DB::RawValue<'_>) -> deserialize::Result<Self> {
        Ok(Self(i64::from_sql(bytes)?))
    }
}

/// An email address as stored, looked up and rate-limited: trimmed, Unicode NFC, lower case — one
/// form everywhere, so `" U@x.com"` and `"u@x.com"` are the same user and the same login brake.
pub fn normalize_email(raw: &str) -> String {
    use unicode_normalization::UnicodeNormalization;
    raw.trim().nfc().collect::<String>().to_lowercase()
}
