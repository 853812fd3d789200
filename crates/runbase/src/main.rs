//! `runbase`: parses the command line, loads configuration, and hands over to `serve` or to an
//! administrative command.

mod admin;
mod backup;
mod cli;
mod client;
mod config;
mod database;
mod limiters;
mod metrics;
mod role;
mod serve;

use clap::Parser;
use cli::{Cli, Command};
use config::{Config, FlagOverrides};
use std::process::ExitCode;

/// mimalloc rather than glibc's malloc: the request path allocates many small, short-lived
/// buffers across threads, where glibc's arenas showed up in profiles (see BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The API's client commands read no configuration and touch no database.
    if matches!(cli.command, Command::Run(_) | Command::Runs(_)) {
        return client::main(cli.command);
    }
    let mut flags = FlagOverrides {
        data_dir: cli.global.data_dir.clone(),
        database_url: cli.global.database_url.clone(),
        ..FlagOverrides::default()
    };
    if let Command::Serve(args) = &cli.command {
        flags.listen = args.listen.clone();
        flags.role = args.role.clone();
        flags.public_url = args.public_url.clone();
        flags.metrics_listen = args.metrics_listen.clone();
        if !args.catalog.is_empty() {
            flags.catalog = Some(args.catalog.clone());
        }
    }
    let (config, warnings) = match Config::load(cli.global.config.clone(), flags) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => serve::run(config, warnings, args.migrate).await,
            Command::Backup(args) => {
                for w in &warnings {
                    eprintln!("warning: {w}");
                }
                backup::run(&config, &args.path)
            }
            other => {
                for w in &warnings {
                    eprintln!("warning: {w}");
                }
                admin::run(&config, other).await
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
