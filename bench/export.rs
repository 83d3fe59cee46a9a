//! Finance export benchmark: `cargo run --release --example export -- [postgres_url] [rows]`
//! (default `postgres://postgres@127.0.0.1:5432/postgres`, 1,000,000).
//!
//! Creates a scratch database on that server (dropped at the end), migrates it, fills
//! `usage_records` with `rows` request-level records of one tenant over one closed month (made by
//! the server, `generate_series`), then exports them as request-level CSV through
//! `finance::export::run` — the code `GET /usage/export` and `taogate export` run — into a counting
//! sink. Prints rows/s, CPU µs per row and the resident set at 10k rows and at the end (the export
//! must hold memory flat: it writes each page before reading the next).

#[path = "scratch.rs"]
mod scratch;

use std::io::Write;
use std::time::Instant;

use diesel::RunQueryDsl;
use scratch::Scratch;
use taogate::db::{Db, migrations};
use taogate::domain::TenantId;
use taogate::finance::export::{
    Cursor, Encoder, ExportError, Format, Granularity, Plan, Progress, Summary, TenantRef, Viewer,
};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The resident set now (kB), from /proc.
fn rss_kb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Process CPU time (user + system), seconds.
fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks: f64 = fields
        .get(11)
        .and_then(|u| u.parse::<f64>().ok())
        .unwrap_or(0.0)
        + fields
            .get(12)
            .and_then(|s| s.parse::<f64>().ok())
            .unwrap_or(0.0);
    ticks / 100.0
}

struct Count(u64);

impl Write for Count {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0 += b.len() as u64;
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

struct Watch {
    rows: u64,
    rss_at_10k: Option<u64>,
    peak: u64,
}

impl Progress for Watch {
    fn checkpoint(&mut self, rows: u64, _: &Cursor, _: &Summary) -> Result<(), ExportError> {
        self.rows += rows;
        let rss = rss_kb();
        self.peak = self.peak.max(rss);
        if self.rss_at_10k.is_none() && self.rows >= 10_000 {
            self.rss_at_10k = Some(rss);
        }
        Ok(())
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let admin = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let rows: i64 = args
        .get(2)
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000_000);
    let scratch = Scratch::create(&admin, "tg_export");
    let db = Db::connect(&scratch.url, 2).unwrap();
    migrations::run_pending(&db).unwrap();
    let tenant = TenantId::generate();
    let mut conn = db.get().unwrap();
    let fill = Instant::now();
    diesel::sql_query(format!(
        "INSERT INTO usage_records (id, request_id, tenant_id, account_id, api_key_id, model, \
         prompt_tokens, completion_tokens, estimated, status, worker, upstream, started_at, ended_at, \
         latency_ms, wholesale_cost_nano, charged_nano, tenant_charged_nano, usage_source, \
         prompt_nano_per_mtok, completion_nano_per_mtok, request_nano, recorded_at) \
         SELECT lpad(to_hex(g), 32, '0'), 'req-' || g, '{tenant}', 'acct-' || (g % 200), 'key-' || (g % 400), \
         CASE WHEN g % 3 = 0 THEN 'm-large' ELSE 'm-small' END, 100 + g % 900, 20 + g % 300, false, 'ok', 'w', \
         'owner-' || (g % 5), TIMESTAMP '2026-10-01' + g * INTERVAL '2 seconds', \
         TIMESTAMP '2026-10-01' + g * INTERVAL '2 seconds' + INTERVAL '300 milliseconds', 300, g % 97, \
         1000 + g % 5000, 400 + g % 2000, 'upstream', 2000000, 8000000, 1000, TIMESTAMP '2026-10-02' \
         FROM generate_series(1, {rows}) g"
    ))
    .execute(&mut *conn)
    .unwrap();
    diesel::sql_query("ANALYZE usage_records")
        .execute(&mut *conn)
        .unwrap();
    let filled = fill.elapsed();
    let plan = Plan {
        tenants: vec![TenantRef {
            id: tenant,
            slug: "bench".into(),
            currency: "usd".into(),
        }],
        account: None,
        from: chrono::NaiveDate::from_ymd_opt(2026, 10, 1)
            .unwrap()
            .and_hms_opt(0, 0, 0)
            .unwrap(),
        to: chrono::NaiveDate::from_ymd_opt(2026, 11, 30)
            .unwrap()
            .and_hms_opt(0, 0, 0)
            .unwrap(),
        granularity: Granularity::Request,
        group_by: Vec::new(),
        viewer: Viewer::Operator,
        format: Format::Csv,
        now: taogate::db::now(),
    };
    let rss_before = rss_kb();
    let mut enc = Encoder::new(Format::Csv, Count(0), false).unwrap();
    let mut watch = Watch {
        rows: 0,
        rss_at_10k: None,
        peak: rss_before,
    };
    let (cpu0, t0) = (cpu_secs(), Instant::now());
    let summary =
        taogate::finance::export::run(&mut conn, &plan, Cursor::default(), &mut enc, &mut watch)
            .unwrap();
    enc.flush().unwrap();
    let (wall, cpu) = (t0.elapsed().as_secs_f64(), cpu_secs() - cpu0);
    let bytes = enc.get_ref().0;
    let at_10k = watch.rss_at_10k.unwrap_or(rss_before);
    println!(
        "| rows | fill (s) | export wall (s) | rows/s | CPU µs/row (taogate) | MB/s | RSS before | RSS at 10k | RSS peak | growth 10k→end |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    println!(
        "| {} | {:.1} | {:.2} | {:.0} | {:.2} | {:.0} | {} MB | {} MB | {} MB | {:+.1} MB |",
        summary.rows,
        filled.as_secs_f64(),
        wall,
        summary.rows as f64 / wall,
        cpu * 1e6 / summary.rows.max(1) as f64,
        bytes as f64 / wall / 1e6,
        rss_before / 1024,
        at_10k / 1024,
        watch.peak / 1024,
        (watch.peak as f64 - at_10k as f64) / 1024.0
    );
    drop(conn);
    drop(db);
    drop(scratch);
}
