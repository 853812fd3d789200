//! The command line.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "runbase",
    version,
    about = "One HTTP API in front of many AI models"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Data directory (database and files) [env: RUNBASE_DATA_DIR] [default: ./runbase-data]
    #[arg(long, global = true)]
    pub data_dir: Option<PathBuf>,
    /// Database URL, e.g. sqlite:///var/lib/runbase/runbase.db or postgres://user@host/db
    /// [env: RUNBASE_DATABASE_URL]
    #[arg(long, global = true)]
    pub database_url: Option<String>,
    /// Configuration file (TOML) [env: RUNBASE_CONFIG]
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start the API and the worker
    Serve(ServeArgs),
    /// Apply database migrations (PostgreSQL: run once per deploy, before starting the nodes)
    Migrate,
    /// Manage accounts
    #[command(subcommand)]
    Accounts(AccountsCommand),
    /// Manage API keys
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Manage credit balances
    #[command(subcommand)]
    Credits(CreditsCommand),
    /// Run webhooks: an account's signing secret
    #[command(subcommand)]
    Webhooks(WebhooksCommand),
    /// Copy a live SQLite store (and local output files) into a new data directory
    Backup(BackupArgs),
    /// Create a run on a running server through its API, optionally wait for it and download
    /// its outputs [env: RUNBASE_URL, RUNBASE_API_KEY]
    Run(RunArgs),
    /// Read, cancel or list runs on a running server through its API
    #[command(subcommand)]
    Runs(RunsCommand),
}

/// Where the API is and the key to use: flags, else the environment.
#[derive(Debug, Args)]
pub struct ApiArgs {
    /// The server's address [env: RUNBASE_URL] [default: http://127.0.0.1:8080]
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
    /// The API key, `sk-...` (prefer the environment: a flag shows in the process list)
    /// [env: RUNBASE_API_KEY]
    #[arg(long, value_name = "KEY")]
    pub api_key: Option<String>,
}

#[derive(Debug, Args)]
#[command(after_help = "Input fields:
  key=value    typed by the model's input schema (string, number, integer, boolean; an array
               field takes each repetition as an item); for a field the schema does not name,
               a number or true/false is sent as JSON, anything else as a string
  key:=JSON    raw JSON, e.g. duration:=5, image_urls:='[\"https://...\"]', text:='\"007\"'
  key=@FILE    the text of FILE as a string (without its final line end)
  A key given twice makes an array.

Exit status: 0 done (with --wait: succeeded), 1 the API refused the request (its error code is
printed), 2 usage error, 3 the run failed or was canceled, 4 the server could not be reached,
the wait timed out or a download failed.")]
pub struct RunArgs {
    /// The model's id, e.g. runbase/placeholder-image
    pub model: String,
    /// Input fields: key=value, key:=JSON, key=@FILE (see below)
    #[arg(value_name = "FIELD")]
    pub fields: Vec<String>,
    /// Wait until the run has finished and print it then (progress on stderr when it is a
    /// terminal)
    #[arg(long)]
    pub wait: bool,
    /// Save every output file into DIR (created if missing) and print where; implies --wait
    #[arg(long, value_name = "DIR")]
    pub download: Option<PathBuf>,
    /// Stop waiting after this many seconds, 1 to 86400 (exit status 4; the run goes on);
    /// implies --wait
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub timeout: Option<u64>,
    /// Send this Idempotency-Key, so that repeating the command cannot create a second run
    #[arg(long, value_name = "KEY")]
    pub idempotency_key: Option<String>,
    #[command(flatten)]
    pub api: ApiArgs,
}

#[derive(Debug, Subcommand)]
pub enum RunsCommand {
    /// Print a run
    Get {
        id: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Cancel a pending or processing run (refunded in full) and print it
    Cancel {
        id: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Print the account's runs of the key's mode (test or live), newest first, one JSON object a line
    List {
        /// At most this many runs (default: all of them)
        #[arg(long)]
        limit: Option<usize>,
        #[command(flatten)]
        api: ApiArgs,
    },
}

#[derive(Debug, Args)]
pub struct BackupArgs {
    /// The directory to create; `runbase serve --data-dir PATH` starts from it
    pub path: PathBuf,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on [env: RUNBASE_LISTEN] [default: 127.0.0.1:8080]
    #[arg(long)]
    pub listen: Option<String>,
    /// Base URL clients use to reach this server (for output file URLs) [env: RUNBASE_PUBLIC_URL]
    #[arg(long)]
    pub public_url: Option<String>,
    /// A catalogue file whose models add to or replace the built-in ones (repeatable)
    #[arg(long)]
    pub catalog: Vec<PathBuf>,
    /// PostgreSQL: apply missing migrations before starting (otherwise an unmigrated schema is
    /// refused; SQLite always migrates)
    #[arg(long)]
    pub migrate: bool,
    /// What this process does: `all` (API, dashboard and worker), `api` (API and dashboard, no
    /// worker) or `worker` (executes runs; serves only /health and output files) [env: RUNBASE_ROLE]
    #[arg(long, value_parser = ["all", "api", "worker"])]
    pub role: Option<String>,
    /// Serve Prometheus metrics (`GET /metrics`) on this address, apart from the API; keep it
    /// private [env: RUNBASE_METRICS_LISTEN]
    #[arg(long)]
    pub metrics_listen: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum AccountsCommand {
    /// Create an account (the first account of an install is an administrator)
    Create {
        email: String,
        /// Make it an administrator (may grant credits in the dashboard)
        #[arg(long)]
        admin: bool,
        /// Read a password for the dashboard from stdin (one line)
        #[arg(long)]
        password_stdin: bool,
    },
    /// Set an account's dashboard password, read from stdin (one line); logs out its sessions
    SetPassword { email: String },
    /// List every account, oldest first, with its balance and whether it is an administrator
    List,
    /// Make an account an administrator (may grant credits in the dashboard)
    SetAdmin { email: String },
    /// Make an account no longer an administrator (refused for the last one)
    UnsetAdmin { email: String },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key and print it (shown only this once)
    Create(KeyCreateArgs),
    /// List an account's keys
    List {
        #[arg(long)]
        account: String,
    },
    /// Change a key's settings
    Update(KeyUpdateArgs),
    /// Disable a key (by id or full key); it answers 401 until enabled again
    Disable { key: String },
    /// Enable a disabled key
    Enable { key: String },
    /// Delete a key for good
    Delete { key: String },
}

#[derive(Debug, Args)]
pub struct KeyCreateArgs {
    /// The account's email
    #[arg(long)]
    pub account: String,
    #[arg(long)]
    pub name: Option<String>,
    /// Lifetime spend cap in cents
    #[arg(long)]
    pub spend_limit_cents: Option<i64>,
    /// An allowed client IP or CIDR block (repeatable, at most 10)
    #[arg(long = "allow-ip")]
    pub allow_ip: Vec<String>,
    /// When the key stops working (RFC 3339, in the future)
    #[arg(long)]
    pub expires_at: Option<String>,
    /// How many runs the key may create
    #[arg(long)]
    pub quota: Option<u64>,
    /// A test key (`sk-test-...`): runs are simulated and never charged
    #[arg(long)]
    pub test: bool,
}

#[derive(Debug, Args)]
pub struct KeyUpdateArgs {
    /// The key's id or the full key
    pub key: String,
    #[arg(long)]
    pub name: Option<String>,
    #[arg(long, conflicts_with = "no_spend_limit")]
    pub spend_limit_cents: Option<i64>,
    /// Remove the spend limit
    #[arg(long)]
    pub no_spend_limit: bool,
    /// Replace the allowlist with these entries (repeatable)
    #[arg(long = "allow-ip", conflicts_with = "clear_allow_ips")]
    pub allow_ip: Vec<String>,
    /// Empty the allowlist (allow every address)
    #[arg(long)]
    pub clear_allow_ips: bool,
    /// When the key stops working (RFC 3339, in the future)
    #[arg(long, conflicts_with = "no_expiry")]
    pub expires_at: Option<String>,
    #[arg(long)]
    pub no_expiry: bool,
    #[arg(long, conflicts_with = "no_quota")]
    pub quota: Option<u64>,
    #[arg(long)]
    pub no_quota: bool,
}

#[derive(Debug, Subcommand)]
pub enum WebhooksCommand {
    /// Print the account's webhook signing secret (`whsec_...`), making it on first use
    Secret {
        #[arg(long)]
        account: String,
        /// Replace it with a new one; the old one keeps signing (beside it) for 24 hours
        #[arg(long)]
        rotate: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum CreditsCommand {
    /// Add credits to an account's balance
    Add {
        #[arg(long)]
        account: String,
        /// Whole cents to add
        #[arg(long)]
        cents: i64,
        #[arg(long, default_value = "credits added by an operator")]
        memo: String,
    },
    /// Show the balance and the ledger
    Show {
        #[arg(long)]
        account: String,
        /// Ledger entries to show
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Print JSON (`account`, `balanceUsd` in micro-USD, and `ledger`) instead of a table
        #[arg(long)]
        json: bool,
    },
}
