//! Balance holds: the money side of an admission. Each account's spendable balance is kept beside
//! its limits (in Redis the hash `…:a:<account>:bal`, which also holds each open hold's amount and
//! lease end, with the pending usage events in `…:a:<account>:pend`; in process
//! [`AccountBalance`]) as three parts:
//!
//! - `ledger`: the ledger balance at `version` (every posting bumps the version; a copy only ever
//!   moves to a newer version, so two replicas syncing out of order cannot go back);
//! - `pending`: what settled requests captured and the batch writer has not committed yet, one entry
//!   per usage event, dropped by the sync that carries a version including that event's posting;
//! - `held`: open holds, one per admitted request, each with an expiry (a crashed request's hold is
//!   swept when it expires).
//!
//! A sync also remembers the events it retired for [`RETIRED_MS`], so a capture that arrives after
//! its event was already committed and retired (settle and the writer race) is not counted again.
//!
//! `spendable = ledger − pending − held`; a request is admitted only if `spendable − hold ≥ floor`
//! (`0` prepaid, `−credit_limit` postpaid). A usage event is counted in exactly one of `ledger` and
//! `pending` except for the short moment between its commit and the sync that follows, when it
//! is counted in both: spendable can be understated briefly, never overstated.

use std::collections::HashMap;

use super::prices::Price;
use crate::domain::{AccountId, Nano};
use crate::models::plan::KeyContext;

/// How long a retired usage event is remembered (a late capture arrives well within it).
pub const RETIRED_MS: i64 = 600_000;

/// What an admission reserves against an account's balance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hold {
    pub account: AccountId,
    /// Reserved: the worst case, capped by the plan.
    pub amount: Nano,
    /// The lowest the spendable balance may go: `0` prepaid, `−credit_limit` postpaid.
    pub floor: Nano,
}

/// The hold of a priced request: its worst case — the prompt estimate and its completion cap
/// (`max_tokens`, else the model's limit) at the plan's retail `price` — capped by the plan's
/// `hold_cap_nano`, against the account's floor; none when that comes to nothing.
pub fn hold_for(
    price: &Price,
    (prompt_estimate, completion_cap): (i64, i64),
    context: &KeyContext,
    account: &AccountId,
) -> Option<Hold> {
    let amount = context.hold_amount(price.cost(prompt_estimate, completion_cap));
    (amount.0 > 0).then(|| Hold {
        account: account.clone(),
        amount,
        floor: context.balance_floor(),
    })
}

/// What settle turns a hold into: the usage event and what it charged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Capture {
    pub event_id: String,
    pub amount: Nano,
}

/// A ledger reading to bring a cached balance up to date.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LedgerSync {
    pub account: AccountId,
    pub balance: Nano,
    pub version: i64,
    /// Usage events whose postings `version` includes (their pending entries are dropped).
    pub committed: Vec<String>,
}

/// The parts of an account's cached spendable balance.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BalanceReading {
    pub ledger: Nano,
    pub version: i64,
    pub pending: Nano,
    pub held: Nano,
}

impl BalanceReading {
    /// `ledger − pending − held` (saturating: every part is within the ledger's range).
    pub fn spendable(&self) -> Nano {
        Nano(
            self.ledger
                .0
                .saturating_sub(self.pending.0)
                .saturating_sub(self.held.0),
        )
    }
}

/// One account's cached balance in process; the same rules as the Lua script.
#[derive(Debug, Default)]
pub struct AccountBalance {
    ledger: i64,
    version: i64,
    /// request id → (amount, expiry ms)
    holds: HashMap<String, (i64, i64)>,
    held: i64,
    /// usage event id → amount
    pend: HashMap<String, i64>,
    pending: i64,
    /// usage event id → when a sync retired it (ms)
    retired: HashMap<String, i64>,
}

impl AccountBalance {
    fn sweep(&mut self, now: i64) {
        let held = &mut self.held;
        self.holds.retain(|_, (amount, expiry)| {
            let keep = *expiry > now;
            if !keep {
                *held -= *amount;
            }
            keep
        });
    }

    pub fn reading(&mut self, now: i64) -> BalanceReading {
        self.sweep(now);
        BalanceReading {
            ledger: Nano(self.ledger),
            version: self.version,
            pending: Nano(self.pending),
            held: Nano(self.held),
        }
    }

    /// Pending usage event ids (for a sync to check against the database).
    pub fn pending_events(&self) -> Vec<String> {
        self.pend.keys().cloned().collect()
    }

    /// Whether `hold` fits; the reading when it does not.
    pub fn check(&mut self, hold: &Hold, now: i64) -> Result<(), BalanceReading> {
        let reading = self.reading(now);
        if reading.spendable().0.saturating_sub(hold.amount.0) < hold.floor.0 {
            return Err(reading);
        }
        Ok(())
    }

    pub fn hold(&mut self, request_id: &str, amount: Nano, expiry: i64) {
        if self
            .holds
            .insert(request_id.to_owned(), (amount.0, expiry))
            .is_none()
        {
            self.held += amount.0;
        }
    }

    /// Releases the request's hold (if still open) and records what it captured (once per event).
    pub fn release(&mut self, request_id: &str, capture: Option<&Capture>) {
        if let Some((amount, _)) = self.holds.remove(request_id) {
            self.held -= amount;
        }
        if let Some(c) = capture.filter(|c| c.amount.0 != 0)
            && !self.pend.contains_key(&c.event_id)
            && !self.retired.contains_key(&c.event_id)
        {
            self.pend.insert(c.event_id.clone(), c.amount.0);
            self.pending += c.amount.0;
        }
    }

    pub fn sync(&mut self, sync: &LedgerSync, now: i64) {
        if sync.version > self.version {
            (self.ledger, self.version) = (sync.balance.0, sync.version);
        }
        self.retired.retain(|_, at| *at > now - RETIRED_MS);
        for id in &sync.committed {
            if let Some(amount) = self.pend.remove(id) {
                self.pending -= amount;
            }
            self.retired.insert(id.clone(), now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spendable_is_ledger_minus_pending_minus_holds() {
        let a = AccountId::generate();
        let mut b = AccountBalance::default();
        b.sync(
            &LedgerSync {
                account: a.clone(),
                balance: Nano(100),
                version: 3,
                committed: vec![],
            },
            0,
        );
        let hold = Hold {
            account: a.clone(),
            amount: Nano(40),
            floor: Nano(0),
        };
        assert!(b.check(&hold, 0).is_ok());
        b.hold("r1", Nano(40), 1000);
        b.hold("r2", Nano(40), 2000);
        assert_eq!(b.check(&hold, 0).unwrap_err().held, Nano(80));
        let capture = Capture {
            event_id: "e1".into(),
            amount: Nano(25),
        };
        b.release("r1", Some(&capture));
        b.release("r1", Some(&capture));
        assert_eq!(b.reading(0).spendable(), Nano(100 - 25 - 40));
        // An older reading never wins; a newer one that includes e1 retires its pending entry.
        let stale = |v, committed: Vec<String>| LedgerSync {
            account: a.clone(),
            balance: Nano(75),
            version: v,
            committed,
        };
        b.sync(&stale(2, vec![]), 0);
        assert_eq!(b.reading(0).ledger, Nano(100));
        b.sync(&stale(4, vec!["e1".into(), "e2".into()]), 0);
        assert_eq!(b.reading(0).spendable(), Nano(75 - 40));
        // e2 was committed (and retired) before its capture arrived: it is not pending again.
        let late = Capture {
            event_id: "e2".into(),
            amount: Nano(30),
        };
        b.release("r9", Some(&late));
        assert_eq!(b.reading(0).pending, Nano(0));
        // r2's hold expires at 2000 and is swept.
        assert_eq!(b.reading(2000).held, Nano(0));
    }
}
