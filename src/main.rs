//! The `taogate` command line: one binary, several roles (see `taogate --help`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use figment::Figment;
use figment::providers::Serialized;
use taogate::commands;
use taogate::config::Config;
use taogate::db::{Db, migrations};

/// mimalloc instead of the system allocator: a request allocates and frees many small buffers
/// across threads (bench/results.md, "mimalloc").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "taogate",
    version,
    about = "Metered, multi-tenant OpenAI-compatible gateway to Bittensor subnets"
)]
struct Cli {
    /// TOML config file layered over the defaults (see deploy/taogate.default.toml).
    #[arg(long, global = true, env = "TAOGATE_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Everything in one process on embedded defaults, with a seeded demo tenant and key and a
    /// local subnet (worker, Epistula miners, owner gateway) on loopback.
    Dev {
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        #[arg(long, default_value = "./.taogate")]
        data_dir: PathBuf,
        /// Pause between the words the local miners stream.
        #[arg(long, default_value_t = 20)]
        token_delay_ms: u64,
    },
    /// A validator dendrite worker (config section `[worker]`).
    Worker,
    /// One local stand-in provider: an Epistula miner or an OpenAI-compatible owner gateway.
    DevnetMiner(commands::worker::DevnetMinerArgs),
    /// The gateway (public API, management API) on the configured database.
    Serve {
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
    /// Applies pending database migrations.
    Migrate {
        /// Revert every migration instead (destroys all data).
        #[arg(long)]
        revert_all: bool,
    },
    /// Recomputes ledger balances from the entries and checks every invariant; non-zero exit on drift.
    Reconcile {
        /// Rewrite drifted cached balances from the entries.
        #[arg(long)]
        rebuild: bool,
        /// Also check a month (YYYY-MM): exports against usage postings per account, payment
        /// credits against stored provider notifications.
        #[arg(long)]
        period: Option<String>,
    },
    /// Usage for finance as CSV or JSONL (every tenant, or `--tenant`), to `--out` or stdout:
    /// a progress bar on a terminal, a summary at the end; `--resume` continues an interrupted
    /// export from the cursor kept beside `--out`.
    Export {
        /// A calendar month, `YYYY-MM` (UTC) — or give `--from` and `--to`.
        #[arg(long, conflicts_with_all = ["from", "to"])]
        month: Option<String>,
        /// Start (RFC 3339 or YYYY-MM-DD, inclusive).
        #[arg(long, requires = "to")]
        from: Option<String>,
        /// End (RFC 3339 or YYYY-MM-DD, exclusive).
        #[arg(long, requires = "from")]
        to: Option<String>,
        /// `request`, `hour`, `day` or `month`.
        #[arg(long, default_value = "day", value_parser = ["request", "hour", "day", "month"])]
        granularity: String,
        /// `csv` or `jsonl`.
        #[arg(long, default_value = "csv", value_parser = ["csv", "jsonl"])]
        format: String,
        /// Any of account,key,model,route (aggregated exports).
        #[arg(long, default_value = "account,key,model,route")]
        group_by: String,
        /// One tenant (slug or id).
        #[arg(long)]
        tenant: Option<String>,
        /// One account of `--tenant`.
        #[arg(long)]
        account: Option<String>,
        /// The output file (default: stdout).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Continue an interrupted export into `--out`.
        #[arg(long)]
        resume: bool,
    },
    /// Bootstrap operations.
    Admin {
        #[command(subcommand)]
        action: Admin,
    },
    /// Asks a running gateway whether it is ready (`GET /readyz`): exit 0 if so, 1 if not —
    /// for container health checks (no shell, no curl needed).
    Health {
        /// The gateway's readiness URL (default: `/readyz` on the port of `TAOGATE_LISTEN`, or 8080).
        #[arg(long)]
        url: Option<String>,
    },
    /// Prints the OpenAPI document (as served at /openapi.json).
    Openapi,
}

#[derive(Subcommand)]
enum Admin {
    /// Creates a platform operator; generates and prints a password when none is given.
    CreateOperator {
        #[arg(long)]
        email: String,
        #[arg(long, env = "TAOGATE_OPERATOR_PASSWORD")]
        password: Option<String>,
    },
    /// The first run in one step: the operator, the first tenant with its owner and a default
    /// plan (one transaction), then what is still missing (a worker) and what to do next.
    Bootstrap(commands::admin::Bootstrap),
    /// Creates a tenant, optionally with its owner.
    CreateTenant {
        #[arg(long)]
        name: String,
        #[arg(long)]
        slug: String,
        #[arg(long)]
        allow_signup: bool,
        #[arg(long)]
        owner_email: Option<String>,
        #[arg(long, env = "TAOGATE_OWNER_PASSWORD")]
        owner_password: Option<String>,
    },
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,actix_server=warn"));
    let json = std::env::var("TAOGATE_LOG_FORMAT").is_ok_and(|f| f == "json");
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let config_path = cli.config.as_deref();
    match cli.command {
        Command::Dev {
            listen,
            data_dir,
            token_delay_ms,
        } => {
            let overrides = Figment::new()
                .merge(Serialized::default("listen", listen))
                .merge(Serialized::default("data_dir", data_dir));
            commands::dev::run(Config::load(config_path, overrides)?, token_delay_ms).await
        }
        Command::Worker => commands::worker::run(Config::load(config_path, Figment::new())?).await,
        Command::DevnetMiner(args) => commands::worker::devnet_miner(args).await,
        Command::Serve { listen } => {
            let mut overrides = Figment::new();
            if let Some(listen) = listen {
                overrides = overrides.merge(Serialized::default("listen", listen));
            }
            commands::serve::run(Config::load(config_path, overrides)?).await
        }
        Command::Migrate { revert_all } => {
            let config = Config::load(config_path, Figment::new())?;
            config.validate(false)?;
            if config.database_url.is_empty() {
                config.ensure_data_dir()?;
            }
            let db = Db::connect(&config.database_url(), 2)?;
            let done = if revert_all {
                migrations::revert_all(&db)?
            } else {
                migrations::run_pending(&db)?
            };
            let verb = if revert_all { "reverted" } else { "applied" };
            println!(
                "{verb} {} migration(s){}",
                done.len(),
                if done.is_empty() {
                    String::new()
                } else {
                    format!(": {}", done.join(", "))
                }
            );
            Ok(())
        }
        Command::Admin { action } => {
            let config = Config::load(config_path, Figment::new())?;
            config.validate(false)?;
            match action {
                Admin::CreateOperator { email, password } => {
                    commands::admin::create_operator(config, email, password).await
                }
                Admin::Bootstrap(b) => commands::admin::bootstrap(config, b).await,
                Admin::CreateTenant {
                    name,
                    slug,
                    allow_signup,
                    owner_email,
                    owner_password,
                } => {
                    commands::admin::create_tenant(
                        config,
                        name,
                        slug,
                        allow_signup,
                        owner_email,
                        owner_password,
                    )
                    .await
                }
            }
        }
        Command::Reconcile { rebuild, period } => {
            let config = Config::load(config_path, Figment::new())?;
            if !taogate::commands::reconcile::run(config, rebuild, period).await? {
                anyhow::bail!("reconcile found drift");
            }
            Ok(())
        }
        Command::Export {
            month,
            from,
            to,
            granularity,
            format,
            group_by,
            tenant,
            account,
            out,
            resume,
        } => {
            let config = Config::load(config_path, Figment::new())?;
            fn quoted<T: serde::de::DeserializeOwned>(s: &str) -> serde_json::Result<T> {
                serde_json::from_value(serde_json::Value::String(s.to_owned()))
            }
            let args = taogate::commands::export::Args {
                month,
                from,
                to,
                granularity: quoted(&granularity)?,
                format: quoted(&format)?,
                group_by,
                tenant,
                account,
                out,
                resume,
            };
            let summary = taogate::commands::export::run(config, args).await?;
            let totals: Vec<String> = summary
                .totals
                .iter()
                .map(|(c, n)| format!("{} {c}", taogate::finance::export::decimal(*n)))
                .collect();
            eprintln!(
                "exported {} row(s), {} request(s); totals: {}",
                summary.rows,
                summary.requests,
                if totals.is_empty() {
                    "none".to_owned()
                } else {
                    totals.join(", ")
                }
            );
            Ok(())
        }
        Command::Health { url } => {
            let url = url.unwrap_or_else(|| {
                let port = std::env::var("TAOGATE_LISTEN")
                    .ok()
                    .and_then(|l| l.rsplit_once(':').map(|(_, p)| p.to_owned()))
                    .unwrap_or_else(|| "8080".to_owned());
                format!("http://127.0.0.1:{port}/readyz")
            });
            let client = reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(3))
                .build()?;
            match client.get(&url).send().await {
                Ok(res) if res.status().is_success() => Ok(()),
                Ok(res) => anyhow::bail!("{url}: not ready ({})", res.status()),
                Err(e) => anyhow::bail!("{url}: {}", e.without_url()),
            }
        }
        Command::Openapi => {
            println!("{}", taogate::app::openapi_document().to_pretty_json()?);
            Ok(())
        }
    }
}

#[actix_web::main]
async fn main() -> ExitCode {
    init_tracing();
    match run(Cli::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
