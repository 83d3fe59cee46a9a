//! The finalized-chain watcher. Each pass: the genesis hash (the cursor is per chain), the
//! finalized head, then every finalized block after the cursor in order (at most
//! `payments.tao.max_blocks_per_pass`): the free balance of every deposit address at that block
//! (`state_queryStorageAt`), compared with the balance last seen. An increase is a deposit:
//! credited at the tenant's rate under the ledger key `tao:<genesis>:<block hash>:<address>`, or
//! recorded as `dust` below `payments.tao.min_deposit_rao` (not credited; it stays on the address).
//! A decrease (a sweep by the operator) is not a debit: it only lowers the baseline. Each block is
//! one database transaction that first claims the cursor (`number - 1 → number`), so a restart
//! resumes at the next block and two watchers never read one block twice. Only finalized blocks
//! are read, so a reorg of unfinalized blocks never reaches the ledger. A node that fails ends the
//! pass; the next pass retries from the cursor.
//!
//! The first pass on a chain starts at its finalized head, and a pass with no deposit addresses
//! moves the cursor to the head: nothing is lost by that, because deposits are balance increases
//! of addresses that start empty — whatever arrived is in the balance at the next block read.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::billing::balance::resync;
use crate::billing::payments::Effect;
use crate::billing::payments::inbox::{Source, apply_recorded};
use crate::billing::payments::notify::system;
use crate::db::Db;
use crate::domain::{AccountId, Nano, TenantId};
use crate::error::ApiError;
use crate::limits::guard::Guard;
use crate::models::payment::ProviderSettings;
use crate::models::tao::{TaoAddress, TaoBalance, TaoCursor, TaoDeposit};

use super::chain::{ChainError, Node, account_key};
use super::price::PriceFeed;
use super::{NAME, RateSource, TaoConfig, rate_source};

/// A tenant's settings at the rate of this block: on the feed, the price read this pass (none:
/// the block waits, 503 inside the pass, and is read again next pass).
fn priced(
    mut settings: ProviderSettings,
    price: Option<i64>,
) -> Result<ProviderSettings, ApiError> {
    if rate_source(&settings) == RateSource::Feed {
        settings.nano_per_unit = price.ok_or(ApiError::Unavailable)?;
    }
    Ok(settings)
}

/// The watcher of one node.
pub struct Watcher {
    db: Db,
    node: Node,
    config: TaoConfig,
    limiter: Option<Arc<Guard>>,
}

/// Why a pass stopped.
#[derive(Debug, thiserror::Error)]
pub enum PassError {
    #[error(transparent)]
    Chain(#[from] ChainError),
    #[error("database: {0}")]
    Db(#[from] ApiError),
}

impl Watcher {
    pub fn new(db: Db, config: TaoConfig, limiter: Option<Arc<Guard>>) -> Result<Self, ChainError> {
        let node = Node::new(
            &config.rpc_url,
            Duration::from_millis(config.rpc_timeout_ms),
        )?;
        Ok(Self {
            db,
            node,
            config,
            limiter,
        })
    }

    /// Runs passes every `payments.tao.poll_ms` on this replica.
    pub fn spawn(self) {
        let every = Duration::from_millis(self.config.poll_ms);
        actix_web::rt::spawn(async move {
            loop {
                if let Err(e) = self.run_once().await {
                    tracing::warn!(error = %e, "TAO deposits: pass stopped; retrying");
                }
                tokio::time::sleep(every).await;
            }
        });
    }

    /// One pass; the blocks this watcher read.
    pub async fn run_once(&self) -> Result<u64, PassError> {
        let genesis = self.node.genesis().await?;
        let (finalized, finalized_hash) = self.node.finalized().await?;
        let g = genesis.clone();
        let (cursor, addresses) = self
            .db
            .run(move |c| Ok((TaoCursor::get(c, &g)?, TaoAddress::all(c)?)))
            .await
            .map_err(ApiError::from)?;
        if addresses.is_empty() {
            let (g, h) = (genesis.clone(), finalized_hash);
            self.db
                .write(move |c| Ok::<_, ApiError>(TaoCursor::jump(c, &g, finalized as i64, &h)?))
                .await?;
            return Ok(0);
        }
        let start = cursor.map_or(finalized, |n| n as u64 + 1);
        if start > finalized {
            return Ok(0);
        }
        let end = finalized.min(start + self.config.max_blocks_per_pass - 1);
        let keys: Vec<(TaoAddress, String)> = addresses
            .into_iter()
            .filter_map(|a| {
                let public: [u8; 32] = hex::decode(&a.public_key).ok()?.try_into().ok()?;
                let key = account_key(&public);
                Some((a, key))
            })
            .collect();
        let key_list: Vec<String> = keys.iter().map(|(_, k)| k.clone()).collect();
        // The operator's price, read once per pass, for tenants on the feed.
        let price = match PriceFeed::from_config(&self.config) {
            Some(feed) => feed
                .nano_per_tao()
                .await
                .inspect_err(|e| tracing::warn!(error = %e, "TAO price feed unavailable"))
                .ok(),
            None => None,
        };
        let mut read = 0;
        for number in start..=end {
            let hash = self.node.block_hash(number).await?;
            let balances = self.node.free_balances(&key_list, Some(&hash)).await?;
            let credited = self
                .block(&genesis, number, &hash, &keys, &balances, price)
                .await?;
            read += 1;
            if let Some(limiter) = &self.limiter {
                for _ in &credited {
                    limiter.metrics().payment(NAME, "credited");
                }
                for (tenant, account) in credited {
                    resync(&self.db, limiter, &tenant, &account)
                        .await
                        .map_err(ApiError::from)?;
                }
            }
        }
        Ok(read)
    }

    /// Applies one finalized block; the accounts credited.
    async fn block(
        &self,
        genesis: &str,
        number: u64,
        hash: &str,
        keys: &[(TaoAddress, String)],
        balances: &HashMap<String, u128>,
        price: Option<i64>,
    ) -> Result<Vec<(TenantId, AccountId)>, ApiError> {
        let (genesis, hash) = (genesis.to_owned(), hash.to_owned());
        let seen: Vec<(TaoAddress, u128)> = keys
            .iter()
            .map(|(a, k)| (a.clone(), balances.get(k).copied().unwrap_or(0)))
            .collect();
        let min = self.config.min_deposit_rao;
        self.db
            .write(move |c| {
                let mut credited = Vec::new();
                if !TaoCursor::claim(c, &genesis, number as i64, &hash)? {
                    return Ok(credited); // another watcher read this block
                }
                for (address, free) in seen {
                    let Ok(free) = i64::try_from(free) else {
                        tracing::error!(address = %address.address, "a deposit address holds more than i64 rao");
                        continue;
                    };
                    let last = TaoBalance::last(c, &genesis, &address.address)?;
                    if free > last {
                        let amount = free - last;
                        let settings = ProviderSettings::find(c, &address.tenant_id, NAME)?
                            .map(|s| priced(s, price))
                            .transpose()?;
                        let key = format!("{genesis}:{hash}:{}", address.address);
                        let (status, rate, source, nano) = match &settings {
                            None => ("unpriced", 0, "none", Nano(0)),
                            Some(s) if amount < min => ("dust", s.nano_per_unit, rate_source(s).as_str(), Nano(0)),
                            Some(s) => {
                                let effect = Effect::Paid {
                                    reference: key.clone(),
                                    session: None,
                                    payment_hint: None,
                                    account_hint: Some(address.account_id.to_string()),
                                    amount_minor: Some(amount),
                                    currency: s.currency.clone(),
                                };
                                let source = Source {
                                    provider: NAME.to_owned(),
                                    event_id: key.clone(),
                                    event_type: "tao.deposit".into(),
                                    notification: None,
                                };
                                let applied = apply_recorded(c, s, &effect, &source, &system())?;
                                credited.push((address.tenant_id.clone(), address.account_id.clone()));
                                ("credited", s.nano_per_unit, rate_source(s).as_str(), applied.moved)
                            }
                        };
                        TaoDeposit {
                            id: uuid::Uuid::now_v7().to_string(),
                            genesis_hash: genesis.clone(),
                            block_number: number as i64,
                            block_hash: hash.clone(),
                            address: address.address.clone(),
                            tenant_id: address.tenant_id.clone(),
                            account_id: address.account_id.clone(),
                            amount_rao: amount,
                            rate,
                            rate_source: source.to_owned(),
                            credited_nano: nano,
                            status: status.to_owned(),
                            created_at: crate::db::now(),
                        }
                        .record(c)?;
                    }
                    if free != last {
                        TaoBalance::set(c, &genesis, &address.address, free, number as i64)?;
                    }
                }
                Ok::<_, ApiError>(credited)
            })
            .await
    }
}
