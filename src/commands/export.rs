//! `taogate export`: a usage export ([`crate::finance::export`]) from the command line, as the
//! operator (every tenant, or `--tenant`), to a file or stdout. On a terminal a progress bar runs
//! on stderr; at the end a summary (rows, requests, totals per currency). With `--out`, the
//! position reached is kept beside the file (`<out>.cursor`, after every page or period written),
//! so `--resume` continues an interrupted export where it stopped, without duplicating a row.

use std::cell::Cell;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, IsTerminal, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::domain::TenantId;
use crate::finance::currency_of;
use crate::finance::export::{
    self, Cursor, Dimension, Encoder, ExportError, Format, Granularity, Plan, Progress, Summary,
    TenantRef, Viewer,
};
use crate::finance::statement::month_range;
use crate::models::tenant::Tenant;

/// What `taogate export` was asked.
#[derive(Debug, Clone)]
pub struct Args {
    pub month: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub granularity: Granularity,
    pub format: Format,
    pub group_by: String,
    pub tenant: Option<String>,
    pub account: Option<String>,
    pub out: Option<PathBuf>,
    pub resume: bool,
}

/// `<out>.cursor`: where an interrupted export stands.
#[derive(Serialize, Deserialize)]
struct Saved {
    cursor: Cursor,
    bytes: u64,
    summary: Summary,
}

/// A writer that counts what reached it.
struct Counting<W: Write> {
    inner: W,
    count: Rc<Cell<u64>>,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(data)?;
        self.count.set(self.count.get() + n as u64);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

struct Bar {
    bar: indicatif::ProgressBar,
    by_rows: bool,
    cursor_file: Option<PathBuf>,
    bytes: Rc<Cell<u64>>,
    before: Summary,
}

/// `before` (an interrupted run's) and `after` (this run's) together.
fn combine(mut before: Summary, after: &Summary) -> Summary {
    before.rows += after.rows;
    before.requests += after.requests;
    for (c, n) in &after.totals {
        *before.totals.entry(c.clone()).or_default() += n;
    }
    before
}

impl Progress for Bar {
    fn checkpoint(
        &mut self,
        rows: u64,
        cursor: &Cursor,
        so_far: &Summary,
    ) -> Result<(), ExportError> {
        if self.by_rows {
            self.bar.inc(rows);
        } else {
            self.bar.inc(1);
        }
        if let Some(path) = &self.cursor_file {
            let saved = Saved {
                cursor: cursor.clone(),
                bytes: self.bytes.get(),
                summary: combine(self.before.clone(), so_far),
            };
            let tmp = path.with_extension("cursor.tmp");
            std::fs::write(&tmp, serde_json::to_vec(&saved)?)?;
            std::fs::rename(&tmp, path)?;
        }
        Ok(())
    }
}

fn parse_time(field: &str, text: &str) -> anyhow::Result<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .map(|d| d.and_hms_opt(0, 0, 0).expect("midnight").and_utc())
        .map_err(|_| anyhow::anyhow!("--{field}: an RFC 3339 time or a YYYY-MM-DD date"))
}

fn cursor_path(out: &Path) -> PathBuf {
    let mut name = out.as_os_str().to_owned();
    name.push(".cursor");
    PathBuf::from(name)
}

/// Runs the export; its summary.
pub async fn run(config: Config, args: Args) -> anyhow::Result<Summary> {
    config.validate(false)?;
    let (from, to) = match (&args.month, &args.from, &args.to) {
        (Some(m), None, None) => {
            let (s, e) = month_range(m).ok_or_else(|| anyhow::anyhow!("--month: YYYY-MM"))?;
            (s, e)
        }
        (None, Some(f), Some(t)) => (
            parse_time("from", f)?.naive_utc(),
            parse_time("to", t)?.naive_utc(),
        ),
        _ => anyhow::bail!("give --month YYYY-MM, or --from and --to"),
    };
    if to <= from {
        anyhow::bail!("--to must be after --from");
    }
    let group_by =
        Dimension::parse_list(&args.group_by).map_err(|e| anyhow::anyhow!("--group-by: {e}"))?;
    if args.resume && args.out.is_none() {
        anyhow::bail!("--resume needs --out (the cursor is kept beside the file)");
    }
    let db = super::open_db(&config, false)?;
    let (tenant_arg, account_arg) = (args.tenant.clone(), args.account.clone());
    let (tenants, account) = db
        .run(move |c| {
            let list = match &tenant_arg {
                Some(t) => {
                    let found = match TenantId::parse(t) {
                        Some(id) => Tenant::find(c, &id)?,
                        None => Tenant::find_by_slug(c, t)?,
                    };
                    vec![found]
                }
                None => {
                    let mut all = Tenant::list(c, "", i64::from(u32::MAX))?;
                    all.sort_by(|a, b| a.slug.cmp(&b.slug));
                    all
                }
            };
            let refs = list
                .into_iter()
                .map(|t| {
                    Ok(TenantRef {
                        currency: currency_of(c, &t.id)?,
                        id: t.id,
                        slug: t.slug,
                    })
                })
                .collect::<diesel::QueryResult<Vec<_>>>()?;
            Ok((refs, account_arg))
        })
        .await
        .map_err(|e| anyhow::anyhow!("tenant: {e}"))?;
    let account = match account {
        Some(a) => Some(
            crate::domain::AccountId::parse(&a)
                .ok_or_else(|| anyhow::anyhow!("--account: an account id"))?,
        ),
        None => None,
    };
    if account.is_some() && args.tenant.is_none() {
        anyhow::bail!("--account goes with --tenant");
    }
    let plan = Plan {
        tenants,
        account,
        from,
        to,
        granularity: args.granularity,
        group_by,
        viewer: Viewer::Operator,
        format: args.format,
        now: crate::db::now(),
    };
    let pool = db.clone();
    tokio::task::spawn_blocking(move || -> anyhow::Result<Summary> {
        let mut conn = pool.get()?;
        // Where to start, and what is already written.
        let cursor_file = args.out.as_deref().map(cursor_path);
        let (start, before, bytes) = match (&cursor_file, args.resume) {
            (Some(path), true) if path.exists() => {
                let saved: Saved = serde_json::from_slice(&std::fs::read(path)?)?;
                (saved.cursor, saved.summary, saved.bytes)
            }
            (_, true) => anyhow::bail!("nothing to resume: no cursor file beside --out"),
            _ => (Cursor::default(), Summary::default(), 0),
        };
        let resuming = args.resume;
        let out: Box<dyn Write> = match &args.out {
            Some(path) => {
                let mut f = if resuming {
                    OpenOptions::new().read(true).write(true).open(path)?
                } else {
                    File::create(path)?
                };
                // Anything after the last checkpoint was not counted: cut it.
                f.set_len(bytes)?;
                f.seek(SeekFrom::Start(bytes))?;
                Box::new(BufWriter::with_capacity(1 << 20, f))
            }
            None => Box::new(BufWriter::with_capacity(1 << 20, std::io::stdout().lock())),
        };
        let count = Rc::new(Cell::new(bytes));
        let mut enc = Encoder::new(
            plan.format,
            Counting {
                inner: out,
                count: count.clone(),
            },
            resuming,
        )?;
        let by_rows = plan.granularity == Granularity::Request;
        let bar = if std::io::stderr().is_terminal() {
            let total = if by_rows {
                export::records(&mut conn, &plan)?
            } else {
                export::periods(&plan) as u64
            };
            let bar = indicatif::ProgressBar::new(total);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} {per_sec} eta {eta}",
                )
                .expect("a valid template"),
            );
            bar
        } else {
            indicatif::ProgressBar::hidden()
        };
        let mut progress = Bar {
            bar,
            by_rows,
            cursor_file: cursor_file.clone(),
            bytes: count,
            before: before.clone(),
        };
        let summary = export::run(&mut conn, &plan, start, &mut enc, &mut progress)?;
        enc.flush()?;
        progress.bar.finish_and_clear();
        if let Some(path) = &cursor_file {
            let _ = std::fs::remove_file(path);
        }
        // A resumed export's totals include what the first run wrote.
        Ok(combine(before, &summary))
    })
    .await?
}
