//! Property tests of the money rules (proptest): the cost of a request is exactly the integer
//! formula, never negative and never above the bound, whatever the price book and token counts;
//! what is billed never exceeds what the request asked for, whatever the upstream reports; and the
//! ledger's invariants hold after random sequences of adjustments (in range or not) and usage
//! postings — Σ entries = 0, no drift, every accepted movement exactly once.

use proptest::prelude::*;
use taogate::billing::amount::{MAX_AMOUNT_NANO, MAX_BALANCE_NANO, MAX_PRICE_NANO};
use taogate::billing::bounds::{Counts, Tolerance, billed};
use taogate::billing::prices::{Price, PriceBook};
use taogate::domain::{Nano, UsageSource};
use taogate::openai::Usage;

fn price() -> impl Strategy<Value = Price> {
    (0..=MAX_PRICE_NANO, 0..=MAX_PRICE_NANO, 0..=MAX_PRICE_NANO).prop_map(|(p, c, r)| Price {
        prompt_nano_per_mtok: p,
        completion_nano_per_mtok: c,
        request_nano: r,
    })
}

/// The formula, written out independently: per-request price + Σ tokens × price per 1M, half up.
fn formula(p: &Price, prompt: i64, completion: i64) -> i128 {
    let tokens = i128::from(prompt.max(0)) * i128::from(p.prompt_nano_per_mtok)
        + i128::from(completion.max(0)) * i128::from(p.completion_nano_per_mtok);
    let per_token = tokens / 1_000_000 + i128::from(tokens % 1_000_000 >= 500_000);
    per_token + i128::from(p.request_nano)
}

proptest! {
    #[test]
    fn cost_is_the_integer_formula_within_bounds(
        p in price(),
        prompt in any::<i64>(),
        completion in any::<i64>(),
    ) {
        let cost = p.cost(prompt, completion).0;
        prop_assert!(cost >= 0);
        prop_assert!(cost <= MAX_AMOUNT_NANO);
        prop_assert_eq!(i128::from(cost), formula(&p, prompt, completion).min(i128::from(MAX_AMOUNT_NANO)));
    }

    #[test]
    fn stored_books_parse_only_within_range(
        model in "[a-z*][a-z0-9-]{0,8}",
        p in any::<i64>(),
        c in any::<i64>(),
        r in any::<i64>(),
    ) {
        let text = format!(r#"{{"{model}": {{"prompt_nano_per_mtok": {p}, "completion_nano_per_mtok": {c}, "request_nano": {r}}}}}"#);
        let in_range = [p, c, r].iter().all(|v| (0..=MAX_PRICE_NANO).contains(v));
        prop_assert_eq!(PriceBook::parse(&text).is_ok(), in_range);
    }

    #[test]
    fn billed_usage_never_exceeds_the_request(
        reported in proptest::option::of((any::<i64>(), any::<i64>())),
        counted in (0i64..1_000_000, 0i64..1_000_000),
        estimate in 0i64..1_000_000,
        cap in 1i64..100_000,
        pct in 0i64..100,
        slack in 0i64..1000,
        p in price(),
    ) {
        let tolerance = Tolerance { pct, tokens: slack };
        let usage = reported.map(|(prompt, completion)| Usage {
            prompt_tokens: prompt,
            completion_tokens: completion,
            total_tokens: 0,
        });
        let b = billed(
            usage,
            Counts { prompt_estimate: estimate, prompt: || counted.0, completion: || counted.1 },
            cap,
            tolerance,
        );
        prop_assert!((0..=cap).contains(&b.completion_tokens));
        prop_assert!(b.prompt_tokens >= 0);
        // Within the tolerance of the gateway's count: its estimate, or the tokenizer's.
        let base = counted.0.max(estimate);
        let allowed = base + base * pct / 100 + slack;
        prop_assert!(b.prompt_tokens <= allowed, "{:?} above {}", b, allowed);
        match b.source {
            UsageSource::Upstream => {
                let (rp, rc) = reported.unwrap();
                prop_assert_eq!((b.prompt_tokens, b.completion_tokens), (rp, rc));
            }
            UsageSource::Counted | UsageSource::Clamped => {
                prop_assert_eq!(b.prompt_tokens, counted.0);
                prop_assert_eq!(b.completion_tokens, counted.1.min(cap));
            }
        }
        // So the charge is bounded by the worst case of what was asked for.
        let charge = p.cost(b.prompt_tokens, b.completion_tokens).0;
        prop_assert!(charge >= 0);
        prop_assert!(charge <= p.cost(allowed, cap).0);
    }
}

/// One step of a random ledger history.
#[derive(Clone, Debug)]
enum Op {
    /// A manual adjustment on account `account` (maybe out of range; maybe a retried key).
    Adjust {
        account: usize,
        amount: i64,
        key: u8,
    },
    /// A usage record charging `retail` to `account` and `wholesale` to its tenant.
    Usage {
        account: usize,
        retail: i64,
        wholesale: i64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let amount = prop_oneof![
        -1_000_000i64..1_000_000,
        Just(MAX_AMOUNT_NANO),
        Just(-MAX_AMOUNT_NANO),
        Just(MAX_BALANCE_NANO),
        Just(i64::MAX),
        Just(i64::MIN),
    ];
    prop_oneof![
        (0usize..3, amount, 0u8..4).prop_map(|(account, amount, key)| Op::Adjust {
            account,
            amount,
            key
        }),
        (0usize..3, 0i64..100_000, 0i64..50_000).prop_map(|(account, retail, wholesale)| {
            Op::Usage {
                account,
                retail,
                wholesale,
            }
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn ledger_invariants_hold_after_random_sequences(ops in proptest::collection::vec(op(), 1..30)) {
        use diesel::Connection;
        use taogate::billing::adjust::Adjustment;
        use taogate::billing::amount::{Sign, input};
        use taogate::billing::metering::writer::write_batch_per_row;
        use taogate::db::{Db, migrations};
        use taogate::domain::{AccountId, ApiKeyId, TenantId};
        use taogate::models::ledger::{LedgerAccount, PostError, reconcile};
        use taogate::models::usage::UsageRecord;

        let dir = tempfile::tempdir().unwrap();
        let db = Db::connect(&format!("sqlite://{}/t.db", dir.path().display()), 1).unwrap();
        migrations::run_pending(&db).unwrap();
        let tenant = TenantId::generate();
        let accounts: Vec<AccountId> = (0..3).map(|_| AccountId::generate()).collect();
        let mut expected = [0i128; 3];
        // The tenant's adjustments account: the other side of every adjustment.
        let mut counter = 0i128;
        let mut seen_keys = std::collections::HashMap::new();
        let mut conn = db.get().unwrap();
        for (n, op) in ops.iter().enumerate() {
            match op {
                Op::Adjust { account, amount, key } => {
                    let Ok(amount) = input("amount_nano", Nano(*amount), Sign::NonZero) else {
                        continue;
                    };
                    let key_text = format!("k{key}");
                    // As the API does: one database transaction, rolled back on refusal.
                    let posted = conn.transaction(|c| {
                        Adjustment {
                            tenant: &tenant,
                            account: &accounts[*account],
                            by: None,
                            key: &key_text,
                            amount,
                            reason: "prop",
                        }
                        .post(c)
                    });
                    match posted {
                        Ok(a) => {
                            let first = seen_keys.entry((*account, *key)).or_insert(amount.0);
                            prop_assert_eq!(a.amount.0, *first, "a replay answers the first amount");
                            if matches!(a.posted, taogate::models::ledger::Posted::New(_)) {
                                expected[*account] += i128::from(amount.0);
                                counter -= i128::from(amount.0);
                            }
                        }
                        Err(PostError::OutOfRange) => {
                            let max = i128::from(MAX_BALANCE_NANO);
                            let amount = i128::from(amount.0);
                            prop_assert!(
                                (expected[*account] + amount).abs() > max || (counter - amount).abs() > max,
                                "refused although both balances stay in range"
                            );
                        }
                        Err(e) => prop_assert!(false, "{e}"),
                    }
                }
                Op::Usage { account, retail, wholesale } => {
                    let now = taogate::db::now();
                    let record = UsageRecord {
                        id: uuid::Uuid::now_v7().to_string(),
                        request_id: format!("r{n}"),
                        tenant_id: tenant.clone(),
                        account_id: accounts[*account].clone(),
                        api_key_id: ApiKeyId::generate(),
                        model: "m".into(),
                        prompt_tokens: 1,
                        completion_tokens: 1,
                        estimated: false,
                        status: "ok".into(),
                        worker: None,
                        upstream: None,
                        miner_uid: None,
                        started_at: now,
                        ended_at: now,
                        ttft_ms: None,
                        latency_ms: 1,
                        wholesale_cost_nano: None,
                        charged_nano: Nano(*retail),
                        tenant_charged_nano: Nano(*wholesale),
                        usage_source: UsageSource::Upstream,
                        prompt_nano_per_mtok: None,
                        completion_nano_per_mtok: None,
                        request_nano: None,
                    };
                    // Written twice (a replay): charged once.
                    let wrote = conn.transaction(|c| write_batch_per_row(c, &[record.clone(), record]));
                    match wrote {
                        Ok(_) => expected[*account] -= i128::from(*retail),
                        Err(PostError::OutOfRange) => {}
                        Err(e) => prop_assert!(false, "{e}"),
                    }
                }
            }
        }
        let report = reconcile(&mut conn, false).unwrap();
        prop_assert!(report.is_clean(), "{:?}", report);
        prop_assert_eq!(report.sum_of_all_entries, 0);
        for (i, account) in accounts.iter().enumerate() {
            let (balance, _) = LedgerAccount::customer_state(&mut conn, account).unwrap();
            prop_assert_eq!(i128::from(balance.0), expected[i]);
            prop_assert!(balance.0.unsigned_abs() <= MAX_BALANCE_NANO as u64);
        }
    }
}
