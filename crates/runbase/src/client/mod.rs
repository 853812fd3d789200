//! `runbase run` and `runbase runs ...`: the commands that talk to a running server through
//! its public API, with the `runbase-client` crate, as any integrator's program would. They
//! read no configuration file and touch no database.

mod input;
mod progress;

use crate::cli::{ApiArgs, Command, RunArgs, RunsCommand};
use futures_util::StreamExt;
use progress::Progress;
use runbase_client::{Client, Error, Run, RunStatus, WaitOptions};
use serde_json::Value;
use std::process::ExitCode;
use std::time::Duration;

/// The server when neither `--url` nor `RUNBASE_URL` names one: `runbase serve`'s default.
const DEFAULT_URL: &str = "http://127.0.0.1:8080";

/// Exit statuses, apart from 0 (documented in `runbase run --help` and the README).
const API_ERROR: u8 = 1;
const USAGE: u8 = 2;
const RUN_UNSUCCESSFUL: u8 = 3;
const UNREACHABLE: u8 = 4;

/// Runs a client command to its exit status.
pub fn main(command: Command) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(async move {
        match command {
            Command::Run(args) => run(args).await,
            Command::Runs(RunsCommand::Get { id, api }) => {
                one_run(&api, |c| async move { c.get(&id).await }).await
            }
            Command::Runs(RunsCommand::Cancel { id, api }) => {
                one_run(&api, |c| async move { c.cancel(&id).await }).await
            }
            Command::Runs(RunsCommand::List { limit, api }) => list(&api, limit).await,
            _ => Err(Failure::usage("not a client command")),
        }
    });
    match code {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("error: {}", f.message);
            ExitCode::from(f.status)
        }
    }
}

/// Why a command stopped: the message for stderr and the exit status.
struct Failure {
    status: u8,
    message: String,
}

impl Failure {
    fn usage(message: impl Into<String>) -> Failure {
        Failure {
            status: USAGE,
            message: message.into(),
        }
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Failure {
        let status = match &e {
            Error::Api(_) => API_ERROR,
            Error::InvalidUrl { .. } => USAGE,
            _ => UNREACHABLE,
        };
        Failure {
            status,
            message: e.to_string(),
        }
    }
}

/// The client for `--url` / `RUNBASE_URL` and `--api-key` / `RUNBASE_API_KEY`.
fn client(api: &ApiArgs) -> Result<Client, Failure> {
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    let key = api
        .api_key
        .clone()
        .or_else(|| env("RUNBASE_API_KEY"))
        .ok_or_else(|| {
            Failure::usage(
                "no API key: set RUNBASE_API_KEY (or pass --api-key); create one in the dashboard \
             (Settings → API Keys) or with `runbase keys create --account EMAIL`",
            )
        })?;
    let url = api
        .url
        .clone()
        .or_else(|| env("RUNBASE_URL"))
        .unwrap_or_else(|| DEFAULT_URL.to_owned());
    Ok(Client::new(&url, key.trim())?)
}

fn print_run(run: &Run) {
    match serde_json::to_string_pretty(run) {
        Ok(json) => println!("{json}"),
        Err(e) => eprintln!("error: cannot print the run: {e}"),
    }
}

async fn one_run<F, Fut>(api: &ApiArgs, call: F) -> Result<(), Failure>
where
    F: FnOnce(Client) -> Fut,
    Fut: Future<Output = Result<Run, Error>>,
{
    let client = client(api)?;
    print_run(&call(client).await?);
    Ok(())
}

async fn list(api: &ApiArgs, limit: Option<usize>) -> Result<(), Failure> {
    let client = client(api)?;
    let mut runs = client.list().take(limit.unwrap_or(usize::MAX));
    while let Some(run) = runs.next().await {
        let line = serde_json::to_string(&run?).map_err(|e| Failure {
            status: UNREACHABLE,
            message: e.to_string(),
        })?;
        println!("{line}");
    }
    Ok(())
}

/// Directories `--download` made, deepest first: taken away again (while still empty) when no
/// run comes to fill them.
struct MadeDirs(Vec<std::path::PathBuf>);

impl MadeDirs {
    fn remove(&self) {
        for dir in &self.0 {
            // Only an empty directory goes; one something else wrote to meanwhile stays.
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// Makes `dir` (and its parents) if missing, and checks that a file can be created in it.
/// Answers the directories this call itself created: each part of the path as written is made
/// with its own `mkdir`, and only those this process's `mkdir` made are counted (a part that
/// already exists, also one reached through `..`, or one another process made meanwhile, is not).
fn writable_dir(dir: &std::path::Path) -> std::io::Result<MadeDirs> {
    let mut made = MadeDirs(Vec::new());
    let mut prefix = std::path::PathBuf::new();
    let checked = (|| {
        for part in dir.components() {
            prefix.push(part);
            match std::fs::create_dir(&prefix) {
                Ok(()) => made.0.insert(0, prefix.clone()),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
        }
        let probe = dir.join(format!(".runbase-write-check-{}", std::process::id()));
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&probe)?;
        std::fs::remove_file(&probe)
    })();
    match checked {
        Ok(()) => Ok(made),
        Err(e) => {
            made.remove();
            Err(e)
        }
    }
}

async fn run(args: RunArgs) -> Result<(), Failure> {
    let client = client(&args.api)?;
    // The schema types `key=value` fields; without it (an unknown model, an older server) they
    // are typed by their text, and the create reports what is wrong.
    let schema = if args.fields.iter().any(|f| !f.contains(":=")) {
        client
            .model(&args.model)
            .await
            .ok()
            .and_then(|m| m.get("inputSchema").cloned())
            .unwrap_or(Value::Null)
    } else {
        Value::Null
    };
    let input = input::build(&args.fields, &schema).map_err(Failure::usage)?;
    // Before the create: a directory that cannot be made or written to costs no run.
    let made = match &args.download {
        Some(dir) => writable_dir(dir)
            .map_err(|e| Failure::usage(format!("--download {}: {e}", dir.display())))?,
        None => MadeDirs(Vec::new()),
    };
    let created = match &args.idempotency_key {
        Some(key) => client.create_idempotent(&args.model, input, key).await,
        None => client.create(&args.model, input).await,
    };
    let created = match created {
        Ok(run) => run,
        Err(e) => {
            // No run: nothing will be saved where the directories were made for it.
            made.remove();
            return Err(e.into());
        }
    };
    if !args.wait && args.download.is_none() && args.timeout.is_none() {
        print_run(&created);
        return Ok(());
    }
    let options = WaitOptions {
        timeout: args.timeout.map(Duration::from_secs),
        ..WaitOptions::default()
    };
    let progress = Progress::start(&created.id, created.status.as_str());
    let waited = client
        .wait_with(&created.id, &options, |r| {
            progress.update(r.status.as_str())
        })
        .await;
    progress.finish();
    let run = waited?;
    print_run(&run);
    if run.status != RunStatus::Succeeded {
        let why = run
            .error
            .as_ref()
            .map(|e| format!(": {}: {}", e.code, e.message))
            .unwrap_or_default();
        return Err(Failure {
            status: RUN_UNSUCCESSFUL,
            message: format!("run {} {}{why}", run.id, run.status),
        });
    }
    if let Some(dir) = &args.download {
        let saved = client.download_outputs(&run, dir).await?;
        for path in &saved {
            eprintln!("saved {}", path.display());
        }
        if saved.is_empty() {
            eprintln!("the run has no output files to save");
        }
    }
    Ok(())
}
