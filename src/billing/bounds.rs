//! What a request may be billed, whatever its upstream or miner reports. The usage an upstream
//! sends is a claim, not a fact: a dishonest miner could report negative tokens (a refund to the
//! customer) or millions of tokens for a three-word answer. So:
//!
//! - billed completion tokens are `0 ..= cap`, where `cap` is the request's own `max_tokens` /
//!   `max_completion_tokens` (else the model's limit) — a charge never exceeds what was asked for;
//! - billed prompt tokens are `≥ 0` and within the configured tolerance of the gateway's own count
//!   (`billing.prompt_tolerance_pct` / `billing.prompt_tolerance_tokens`; tokenizers differ). The
//!   gateway's count is its admission estimate (≈ 4 characters a token) when the report agrees
//!   with it within the tolerance — the common, honest case costs no tokenizer pass — and the
//!   o200k tokenizer's count otherwise.
//!
//! Usage inside the bounds is billed as reported ([`UsageSource::Upstream`]). Usage outside them is
//! replaced by the gateway's own count of what was delivered ([`UsageSource::Clamped`]); with no
//! usage at all (none sent, or the request was cut short) the gateway's count is billed
//! ([`UsageSource::Counted`]). The gateway's completion count is itself capped at `cap`.

use crate::domain::UsageSource;
use crate::openai::Usage;

/// The tolerance on prompt tokens (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tolerance {
    pub pct: i64,
    pub tokens: i64,
}

impl Tolerance {
    /// Whether `reported` prompt tokens are acceptable against the gateway's `counted`.
    fn accepts(self, reported: i64, counted: i64) -> bool {
        let slack = i128::from(counted) * i128::from(self.pct) / 100 + i128::from(self.tokens);
        reported >= 0 && (i128::from(reported) - i128::from(counted)).abs() <= slack
    }
}

/// The token counts a request is billed for, and where they came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Billed {
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub source: UsageSource,
}

/// The gateway's own counts, computed only when needed (the tokenizer is not free).
pub struct Counts<P, C> {
    /// The admission estimate of the prompt (free: already known).
    pub prompt_estimate: i64,
    pub prompt: P,
    pub completion: C,
}

/// Decides what is billed: `reported` is the upstream's usage when the request completed with one.
pub fn billed<P, C>(
    reported: Option<Usage>,
    counts: Counts<P, C>,
    cap: i64,
    tolerance: Tolerance,
) -> Billed
where
    P: FnOnce() -> i64,
    C: FnOnce() -> i64,
{
    let cap = cap.max(0);
    let Counts {
        prompt_estimate,
        prompt,
        completion,
    } = counts;
    let mut prompt = Some(prompt);
    let mut exact = None;
    let mut count_prompt =
        move || *exact.get_or_insert_with(|| prompt.take().map_or(0, |count| count().max(0)));
    let gateway = |prompt_tokens: i64, source| Billed {
        prompt_tokens,
        completion_tokens: completion().clamp(0, cap),
        source,
    };
    let Some(u) = reported else {
        return gateway(count_prompt(), UsageSource::Counted);
    };
    // The estimate agrees with the report: no tokenizer pass. Otherwise the tokenizer decides.
    let prompt_ok = tolerance.accepts(u.prompt_tokens, prompt_estimate.max(0))
        || tolerance.accepts(u.prompt_tokens, count_prompt());
    if prompt_ok && (0..=cap).contains(&u.completion_tokens) {
        return Billed {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
            source: UsageSource::Upstream,
        };
    }
    gateway(count_prompt(), UsageSource::Clamped)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOL: Tolerance = Tolerance { pct: 25, tokens: 8 };

    fn usage(prompt: i64, completion: i64) -> Option<Usage> {
        Some(Usage {
            prompt_tokens: prompt,
            completion_tokens: completion,
            total_tokens: prompt + completion,
        })
    }

    fn run(reported: Option<Usage>, counted: (i64, i64), cap: i64) -> Billed {
        billed(
            reported,
            Counts {
                prompt_estimate: counted.0,
                prompt: || counted.0,
                completion: || counted.1,
            },
            cap,
            TOL,
        )
    }

    #[test]
    fn honest_usage_is_billed_as_reported() {
        let b = run(usage(100, 5), (90, 4), 5);
        assert_eq!((b.prompt_tokens, b.completion_tokens), (100, 5));
        assert_eq!(b.source, UsageSource::Upstream);
    }

    #[test]
    fn dishonest_usage_is_replaced_by_the_gateway_count() {
        for reported in [
            usage(100, -1_000_000),
            usage(100, 10_000_000),
            usage(-5, 3),
            usage(10_000, 3),
            usage(i64::MIN, i64::MAX),
        ] {
            let b = run(reported, (100, 3), 5);
            assert_eq!(
                (b.prompt_tokens, b.completion_tokens),
                (100, 3),
                "{reported:?}"
            );
            assert_eq!(b.source, UsageSource::Clamped);
        }
    }

    #[test]
    fn the_tokenizer_runs_only_when_the_estimate_disagrees() {
        let with = |estimate: i64, exact: i64, reported: i64| {
            let ran = std::cell::Cell::new(false);
            let b = billed(
                usage(reported, 1),
                Counts {
                    prompt_estimate: estimate,
                    prompt: || {
                        ran.set(true);
                        exact
                    },
                    completion: || 1,
                },
                5,
                TOL,
            );
            (b.prompt_tokens, b.source, ran.get())
        };
        assert_eq!(with(100, 10, 100), (100, UsageSource::Upstream, false));
        assert_eq!(with(10, 100, 100), (100, UsageSource::Upstream, true));
        assert_eq!(with(10, 10, 1000), (10, UsageSource::Clamped, true));
    }

    #[test]
    fn no_usage_is_counted_and_the_count_is_capped() {
        let b = run(None, (12, 40), 5);
        assert_eq!((b.prompt_tokens, b.completion_tokens), (12, 5));
        assert_eq!(b.source, UsageSource::Counted);
    }
}
