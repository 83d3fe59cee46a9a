//! The shared limiter backend: every descriptor of a request checked and counted by one Lua script
//! ([`limits.lua`](./limits.lua)), called by SHA (`EVALSHA`; loaded again by the client if Redis lost
//! it): one round trip per admission, all-or-nothing, on Redis server time. Keys carry the tenant
//! as hash tag (`<prefix>{t:<tenant id>}:k:<key id>:rpm`) so a script's keys share one Redis
//! Cluster slot.

use redis::Script;

use super::{Admission, Ask, Backend, Clock, Decision, Descriptor, Reading, Unavailable};
use crate::billing::holds::{BalanceReading, Capture, LedgerSync};
use crate::domain::{AccountId, Nano, TenantId};
use crate::redis_link::RedisLink;

pub struct RedisBackend {
    link: RedisLink,
    prefix: String,
    clock: Clock,
    script: Script,
}

fn readings(values: &[i64]) -> Vec<Reading> {
    values
        .chunks_exact(2)
        .map(|p| Reading {
            used: p[0],
            reset_ms: p[1],
        })
        .collect()
}

impl RedisBackend {
    pub fn new(link: RedisLink, prefix: &str, clock: Clock) -> Self {
        Self {
            link,
            prefix: prefix.to_owned(),
            clock,
            script: Script::new(include_str!("limits.lua")),
        }
    }

    /// Loads the script (so the first admission is already a single `EVALSHA`).
    pub async fn load(&self) -> Result<(), Unavailable> {
        let script = self.script.clone();
        self.link
            .run(|mut c| async move { script.load_async(&mut c).await.map(drop) })
            .await
            .map_err(|e| Unavailable(e.to_string()))
    }

    pub fn is_cluster(&self) -> bool {
        self.link.is_cluster()
    }

    /// Whether the node holding `tenant`'s slot answers (`EXISTS` on a key of its hash tag).
    pub async fn ping_tenant(&self, tenant: &TenantId) -> Result<(), Unavailable> {
        let key = self.key(tenant.as_str(), "probe");
        self.link
            .run(|mut c| async move {
                redis::cmd("EXISTS")
                    .arg(key)
                    .query_async::<i64>(&mut c)
                    .await
            })
            .await
            .map(drop)
            .map_err(|e| Unavailable(e.to_string()))
    }

    fn key(&self, tenant: &str, name: &str) -> String {
        format!("{}{{t:{tenant}}}:{name}", self.prefix)
    }

    /// The account's balance hash (holds included), the holds zset older versions of the script
    /// kept (still read, for holds they took), the retired usage events zset and the pending
    /// usage events hash.
    fn balance_keys(&self, tenant: &str, account: &str) -> [String; 4] {
        [
            self.key(tenant, &format!("a:{account}:bal")),
            self.key(tenant, &format!("a:{account}:holds")),
            self.key(tenant, &format!("a:{account}:retired")),
            self.key(tenant, &format!("a:{account}:pend")),
        ]
    }

    /// The keys and arguments of one script call: `op` over the descriptors, the balance keys of
    /// `account` when given (a hold, or a balance op without descriptors), and `extra` arguments
    /// after the descriptors.
    fn parts(
        &self,
        op: &str,
        tenant: &str,
        (descriptors, account): (&[Descriptor], Option<&str>),
        admission_id: &str,
        (arg4, arg5): (i64, i64),
        extra: &[String],
    ) -> (Vec<String>, Vec<String>) {
        let mut keys: Vec<String> = descriptors
            .iter()
            .map(|d| self.key(tenant, &d.name()))
            .collect();
        if let Some(account) = account {
            keys.extend(self.balance_keys(tenant, account));
        }
        if op == "settle" {
            keys.push(self.key(tenant, &format!("settled:{admission_id}")));
        }
        // A seed is for the period of the admission that asked for it: its time is the seed's now.
        let now = if op == "seed" {
            arg4
        } else {
            self.clock.fixed().unwrap_or(-1)
        };
        let mut args = vec![
            op.to_owned(),
            now.to_string(),
            admission_id.to_owned(),
            arg4.to_string(),
            arg5.to_string(),
            descriptors.len().to_string(),
        ];
        for d in descriptors {
            args.push(d.kind.tag().to_owned());
            args.push(d.limit.to_string());
        }
        args.extend_from_slice(extra);
        (keys, args)
    }

    /// One script call (see [`RedisBackend::parts`]).
    async fn call<T: redis::FromRedisValue>(
        &self,
        op: &str,
        tenant: &str,
        scope: (&[Descriptor], Option<&str>),
        admission_id: &str,
        args: (i64, i64),
        extra: &[String],
    ) -> Result<T, Unavailable> {
        self.invoke(self.parts(op, tenant, scope, admission_id, args, extra))
            .await
    }

    async fn invoke<T: redis::FromRedisValue>(
        &self,
        (keys, args): (Vec<String>, Vec<String>),
    ) -> Result<T, Unavailable> {
        let mut invocation = self.script.prepare_invoke();
        invocation.key(keys).arg(args);
        self.link
            .run(|mut c| async move { invocation.invoke_async::<T>(&mut c).await })
            .await
            .map_err(|e| Unavailable(e.to_string()))
    }

    fn settle_parts(
        &self,
        admission: &Admission,
        actual_tokens: i64,
        capture: Option<&Capture>,
    ) -> (Vec<String>, Vec<String>) {
        let ask = &admission.ask;
        // With a hold: the capture (event id, amount; none: '' and 0) and the hold's amount.
        let capture_args = match (&ask.hold, capture) {
            (None, _) => vec![],
            (Some(h), Some(c)) => vec![
                c.event_id.clone(),
                c.amount.0.to_string(),
                h.amount.0.to_string(),
            ],
            (Some(h), None) => vec![String::new(), "0".into(), h.amount.0.to_string()],
        };
        self.parts(
            "settle",
            ask.tenant.as_str(),
            (
                &ask.descriptors,
                ask.hold.as_ref().map(|h| h.account.as_str()),
            ),
            &ask.admission_id,
            (actual_tokens - ask.tokens, admission.at_ms),
            &capture_args,
        )
    }

    /// Several settles in one round trip: their `EVALSHA`s pipelined on one connection (each
    /// script still runs on its own). Not on a cluster (a pipeline's keys would span slots), nor
    /// when Redis lost the script: then, and for whatever else failed, each settle is sent on its
    /// own, all at once — a settle applies once however often it is sent (see `limits.lua`).
    pub async fn settle_many(
        &self,
        batch: &[(Admission, i64, Option<Capture>)],
    ) -> Vec<Result<(), Unavailable>> {
        if batch.len() > 1 && !self.is_cluster() {
            let mut pipe = redis::pipe();
            for (admission, tokens, capture) in batch {
                let (keys, args) = self.settle_parts(admission, *tokens, capture.as_ref());
                pipe.cmd("EVALSHA")
                    .arg(self.script.get_hash())
                    .arg(keys.len())
                    .arg(keys)
                    .arg(args)
                    .ignore();
            }
            let sent = self
                .link
                .run(|mut c| async move { pipe.query_async::<()>(&mut c).await })
                .await;
            if sent.is_ok() {
                return batch.iter().map(|_| Ok(())).collect();
            }
        }
        // Concurrently: on a cluster, one tenant's unreachable node must not hold up the others.
        futures_util::future::join_all(
            batch.iter().map(|(admission, tokens, capture)| {
                self.settle(admission, *tokens, capture.as_ref())
            }),
        )
        .await
    }
}

impl Backend for RedisBackend {
    async fn admit(&self, ask: &Ask, lease_ms: i64) -> Result<Decision, Unavailable> {
        let hold_args = ask
            .hold
            .as_ref()
            .map(|h| vec![h.amount.0.to_string(), h.floor.0.to_string()])
            .unwrap_or_default();
        let out: Vec<i64> = self
            .call(
                "admit",
                ask.tenant.as_str(),
                (
                    &ask.descriptors,
                    ask.hold.as_ref().map(|h| h.account.as_str()),
                ),
                &ask.admission_id,
                (ask.tokens, lease_ms),
                &hold_args,
            )
            .await?;
        let bad = || Unavailable(format!("unexpected script answer {out:?}"));
        match out.as_slice() {
            [1, at_ms, rest @ ..] => Ok(Decision::Admitted {
                at_ms: *at_ms,
                readings: readings(rest),
            }),
            [0, at_ms, index, retry_after_ms, rest @ ..] if *index >= 1 => Ok(Decision::Refused {
                at_ms: *at_ms,
                index: (*index - 1) as usize,
                retry_after_ms: *retry_after_ms,
                readings: readings(rest),
            }),
            [2, _] => Ok(Decision::Unsynced),
            [4, at_ms, indexes @ ..] if !indexes.is_empty() => Ok(Decision::Unseeded {
                at_ms: *at_ms,
                indexes: indexes.iter().map(|i| (*i - 1) as usize).collect(),
            }),
            [3, at_ms, ledger, version, pending, held] => Ok(Decision::Insufficient {
                at_ms: *at_ms,
                balance: BalanceReading {
                    ledger: Nano(*ledger),
                    version: *version,
                    pending: Nano(*pending),
                    held: Nano(*held),
                },
            }),
            _ => Err(bad()),
        }
    }

    async fn settle(
        &self,
        admission: &Admission,
        actual_tokens: i64,
        capture: Option<&Capture>,
    ) -> Result<(), Unavailable> {
        self.invoke::<Vec<i64>>(self.settle_parts(admission, actual_tokens, capture))
            .await
            .map(drop)
    }

    async fn seed(
        &self,
        tenant: &TenantId,
        seeds: &[(Descriptor, i64)],
        at_ms: i64,
    ) -> Result<(), Unavailable> {
        let descriptors: Vec<Descriptor> = seeds.iter().map(|(d, _)| d.clone()).collect();
        let values: Vec<String> = seeds.iter().map(|(_, v)| v.to_string()).collect();
        self.call::<Vec<i64>>(
            "seed",
            tenant.as_str(),
            (&descriptors, None),
            "",
            (at_ms, 0),
            &values,
        )
        .await
        .map(drop)
    }

    async fn sync(&self, tenant: &TenantId, sync: &LedgerSync) -> Result<(), Unavailable> {
        self.call::<Vec<i64>>(
            "sync",
            tenant.as_str(),
            (&[], Some(sync.account.as_str())),
            "",
            (sync.balance.0, sync.version),
            &sync.committed,
        )
        .await
        .map(drop)
    }

    async fn balance(
        &self,
        tenant: &TenantId,
        account: &AccountId,
    ) -> Result<Option<(BalanceReading, Vec<String>)>, Unavailable> {
        let out: Vec<String> = self
            .call(
                "balance",
                tenant.as_str(),
                (&[], Some(account.as_str())),
                "",
                (0, 0),
                &[],
            )
            .await?;
        if out.is_empty() {
            return Ok(None);
        }
        let num = |i: usize| {
            out.get(i)
                .and_then(|v| v.parse::<i64>().ok())
                .ok_or_else(|| Unavailable(format!("unexpected script answer {out:?}")))
        };
        let reading = BalanceReading {
            ledger: Nano(num(0)?),
            version: num(1)?,
            pending: Nano(num(2)?),
            held: Nano(num(3)?),
        };
        Ok(Some((reading, out[4..].to_vec())))
    }

    async fn peek(
        &self,
        tenant: &TenantId,
        descriptors: &[Descriptor],
    ) -> Result<Vec<Reading>, Unavailable> {
        let out: Vec<i64> = self
            .call(
                "peek",
                tenant.as_str(),
                (descriptors, None),
                "",
                (0, 0),
                &[],
            )
            .await?;
        match out.as_slice() {
            [1, _, rest @ ..] => Ok(readings(rest)),
            _ => Err(Unavailable(format!("unexpected script answer {out:?}"))),
        }
    }
}
