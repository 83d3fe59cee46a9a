//! The shared limiter backend: every descriptor of a request checked and counted by one Lua script
//! ([`limits.lua`](./limits.lua)), called by SHA (`EVALSHA`; loaded again by the client if Redis lost
//! it): one round trip per admission, all-or-nothing, on Redis server time. Keys carry the tenant
//! as hash tag (`<prefix>{t:<tenant id>}:k:<key id>:rpm`) so a script's keys share one Redis
//! Cluster slot.

use redis::Script;

use super::{Admission, Ask, Backend, Clock, Decision, Descriptor, Reading, Unavailable};
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

    async fn call(
        &self,
        op: &str,
        tenant: &str,
        descriptors: &[Descriptor],
        request_id: &str,
        (arg4, arg5): (i64, i64),
    ) -> Result<Vec<i64>, Unavailable> {
        let mut invocation = self.script.prepare_invoke();
        for d in descriptors {
            invocation.key(format!("{}{{t:{tenant}}}:{}", self.prefix, d.name()));
        }
        if op == "settle" {
            invocation.key(format!(
                "{}{{t:{tenant}}}:settled:{request_id}",
                self.prefix
            ));
        }
        invocation
            .arg(op)
            .arg(self.clock.fixed().unwrap_or(-1))
            .arg(request_id)
            .arg(arg4)
            .arg(arg5);
        for d in descriptors {
            invocation.arg(d.kind.tag()).arg(d.limit);
        }
        self.link
            .run(|mut c| async move { invocation.invoke_async::<Vec<i64>>(&mut c).await })
            .await
            .map_err(|e| Unavailable(e.to_string()))
    }
}

impl Backend for RedisBackend {
    async fn admit(&self, ask: &Ask, lease_ms: i64) -> Result<Decision, Unavailable> {
        let out = self
            .call(
                "admit",
                &ask.tenant,
                &ask.descriptors,
                &ask.request_id,
                (ask.tokens, lease_ms),
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
            _ => Err(bad()),
        }
    }

    async fn settle(&self, admission: &Admission, actual_tokens: i64) -> Result<(), Unavailable> {
        let ask = &admission.ask;
        self.call(
            "settle",
            &ask.tenant,
            &ask.descriptors,
            &ask.request_id,
            (actual_tokens - ask.tokens, admission.at_ms),
        )
        .await
        .map(drop)
    }

    async fn peek(
        &self,
        tenant: &str,
        descriptors: &[Descriptor],
    ) -> Result<Vec<Reading>, Unavailable> {
        let out = self.call("peek", tenant, descriptors, "", (0, 0)).await?;
        match out.as_slice() {
            [1, _, rest @ ..] => Ok(readings(rest)),
            _ => Err(Unavailable(format!("unexpected script answer {out:?}"))),
        }
    }
}
