//! Administrative commands: accounts, keys and credits, on the same database as a running
//! server. They call the same service functions as the API and the dashboard.

use crate::cli::{
    AccountsCommand, Command, CreditsCommand, KeyCreateArgs, KeyUpdateArgs, KeysCommand,
    WebhooksCommand,
};
use crate::config::Config;
use anyhow::Context;
use runbase_domain::account::{ApiKey, KeySettings, KeyUpdate};
use runbase_domain::ip::IpAllowlist;
use runbase_domain::money::Millicents;
use runbase_domain::store::Store;
use runbase_domain::time::Timestamp;
use runbase_domain::{service, sessions};

/// `println!` that survives a reader that stops reading (`runbase keys list | head -1`): the
/// command's work is done by the time it prints, so a closed pipe drops the rest of the output
/// instead of panicking (and reporting a failure after, say, the credit was added).
macro_rules! out {
    ($($arg:tt)*) => {
        write_out(format_args!($($arg)*))
    };
}

fn write_out(args: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    match writeln!(std::io::stdout().lock(), "{args}") {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            eprintln!("warning: writing the output failed: {e}");
        }
        _ => {}
    }
}

pub async fn run(config: &Config, command: Command) -> anyhow::Result<()> {
    if let Command::Migrate = command {
        return crate::database::migrate(config).await;
    }
    let store = crate::database::open(config, crate::database::Schema::MustBeCurrent).await?;
    let store: &dyn Store = &*store;
    match command {
        Command::Serve(_) | Command::Backup(_) | Command::Run(_) | Command::Runs(_) => {
            unreachable!("handled by main")
        }
        Command::Migrate => unreachable!("handled above"),
        Command::Accounts(AccountsCommand::Create {
            email,
            admin,
            password_stdin,
        }) => {
            let password = if password_stdin {
                Some(read_password()?)
            } else {
                None
            };
            let credit = config
                .accounts
                .signup_credit()
                .map_err(anyhow::Error::msg)?;
            let account = service::create_account_as(store, &email, admin, credit).await?;
            if let Some(p) = password {
                sessions::set_password(store, &account, &p)
                    .await
                    .map_err(|e| anyhow::anyhow!("{}", e.message))?;
            }
            out!("{}", account.id);
            eprintln!(
                "created account {} ({}){}",
                account.email,
                account.id,
                if account.admin { ", administrator" } else { "" }
            );
        }
        Command::Accounts(AccountsCommand::SetPassword { email }) => {
            let account = service::account_by_email(store, &email).await?;
            let password = read_password()?;
            sessions::set_password(store, &account, &password)
                .await
                .map_err(|e| anyhow::anyhow!("{}", e.message))?;
            eprintln!(
                "password set for {}; its sessions were logged out",
                account.email
            );
        }
        Command::Accounts(AccountsCommand::List) => {
            out!(
                "{:<30} {:<40} {:>14} {:<5} CREATED",
                "ID",
                "EMAIL",
                "BALANCE",
                "ADMIN"
            );
            for a in service::list_accounts(store).await? {
                out!(
                    "{:<30} {:<40} {:>14} {:<5} {}",
                    a.id,
                    printable(&a.email),
                    a.balance.to_string(),
                    if a.admin { "yes" } else { "no" },
                    a.created_at.to_rfc3339(),
                );
            }
        }
        Command::Accounts(AccountsCommand::SetAdmin { email }) => {
            let a = service::set_admin(store, &email, true).await?;
            eprintln!("{} is an administrator", printable(&a.email));
        }
        Command::Accounts(AccountsCommand::UnsetAdmin { email }) => {
            let a = service::set_admin(store, &email, false).await?;
            eprintln!("{} is no longer an administrator", printable(&a.email));
        }
        Command::Keys(cmd) => keys(store, cmd).await?,
        Command::Webhooks(WebhooksCommand::Secret { account, rotate }) => {
            let account = service::account_by_email(store, &account).await?;
            let secrets = if rotate {
                runbase_domain::webhooks::rotate(store, &account.id).await?
            } else {
                runbase_domain::webhooks::secrets(store, &account.id).await?
            };
            out!("{}", secrets.current);
            if let (Some(_), Some(until)) = (&secrets.previous, secrets.previous_until)
                && until > Timestamp::now()
            {
                eprintln!(
                    "the previous secret also signs deliveries until {}",
                    until.to_rfc3339()
                );
            }
        }
        Command::Credits(CreditsCommand::Add {
            account,
            cents,
            memo,
        }) => {
            let account = service::account_by_email(store, &account).await?;
            let entry = service::add_credits(store, &account, cents, &memo).await?;
            out!("balance {} (added {})", entry.balance_after, entry.amount);
        }
        Command::Credits(CreditsCommand::Show {
            account,
            limit,
            json,
        }) => {
            let account = service::account_by_email(store, &account).await?;
            if json {
                let entries = store
                    .ledger(&account.id, limit.clamp(1, 100_000), None)
                    .await?;
                let out = serde_json::json!({"account": account, "balanceUsd": account.balance, "ledger": entries});
                out!("{}", serde_json::to_string_pretty(&out)?);
                return Ok(());
            }
            out!("account {} ({})", printable(&account.email), account.id);
            out!("balance {}", account.balance);
            let entries = store
                .ledger(&account.id, limit.clamp(1, 1000), None)
                .await?;
            out!(
                "{:<8} {:<27} {:<11} {:>12} {:>14}  RUN / MEMO",
                "ENTRY",
                "WHEN",
                "KIND",
                "AMOUNT",
                "BALANCE"
            );
            for e in entries {
                out!(
                    "{:<8} {:<27} {:<11} {:>12} {:>14}  {}",
                    e.id,
                    e.created_at.to_rfc3339(),
                    e.kind.as_str(),
                    e.amount.to_string(),
                    e.balance_after.to_string(),
                    printable(
                        &e.run_id
                            .as_deref()
                            .map_or(e.memo.clone(), |r| format!("{r} {}", e.memo))
                    ),
                );
            }
        }
    }
    Ok(())
}

fn cents(n: i64, what: &str) -> anyhow::Result<Millicents> {
    if n < 0 {
        anyhow::bail!("{what} cannot be negative");
    }
    Millicents::from_cents(n)
        .filter(|m| *m <= Millicents::MAX_BALANCE)
        .with_context(|| {
            format!(
                "{what} is too large (at most {} cents)",
                Millicents::MAX_BALANCE.0 / Millicents::PER_CENT
            )
        })
}

fn allowlist(entries: &[String]) -> anyhow::Result<IpAllowlist> {
    IpAllowlist::parse(entries).map_err(|e| anyhow::anyhow!("--allow-ip: {e}"))
}

/// `--expires-at`: a time still to come (a key that expired already would be created, or left,
/// unusable without saying so).
fn timestamp(s: &str) -> anyhow::Result<Timestamp> {
    let at = Timestamp::parse_rfc3339(s).map_err(|e| anyhow::anyhow!("--expires-at: {e}"))?;
    if at <= Timestamp::now() {
        anyhow::bail!("--expires-at: {s} is not in the future (`keys disable` stops a key now)");
    }
    Ok(at)
}

/// `s` safe to print on a terminal: control characters (newlines, escapes), format characters
/// (bidirectional marks, zero-width spaces), separators, fillers and unassigned code points
/// (`service::is_unsafe_char`) are written as `\u{..}` escapes, so a stored name cannot forge
/// lines, recolour the output or hide. New names cannot contain them; older ones may.
fn printable(s: &str) -> String {
    s.chars()
        .map(|c| {
            if service::is_unsafe_char(c) {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

fn describe(k: &ApiKey) -> String {
    let now = Timestamp::now();
    let limit = k.spend_limit.map_or("none".to_owned(), |l| l.to_string());
    let quota = k.quota.map_or("none".to_owned(), |q| q.to_string());
    format!(
        "{}  {:<16} {:<9} {:<14} spent {} / limit {}  runs {} / quota {}  ips [{}]  expires {}  last used {}",
        k.id,
        k.prefix,
        k.status(now),
        printable(&k.name),
        k.spent,
        limit,
        k.runs_created,
        quota,
        k.allow_ips.to_strings().join(", "),
        k.expires_at.map_or("never".to_owned(), |t| t.to_rfc3339()),
        k.last_used_at
            .map_or("never".to_owned(), |t| t.to_rfc3339()),
    )
}

async fn keys(store: &dyn Store, cmd: KeysCommand) -> anyhow::Result<()> {
    match cmd {
        KeysCommand::Create(KeyCreateArgs {
            account,
            name,
            spend_limit_cents,
            allow_ip,
            expires_at,
            quota,
            test,
        }) => {
            let account = service::account_by_email(store, &account).await?;
            let settings = KeySettings {
                name,
                spend_limit: spend_limit_cents
                    .map(|c| cents(c, "--spend-limit-cents"))
                    .transpose()?,
                allow_ips: allowlist(&allow_ip)?,
                expires_at: expires_at.as_deref().map(timestamp).transpose()?,
                quota,
                test,
            };
            let (key, secret) = service::create_key(store, &account, settings).await?;
            // The key alone on stdout, so scripts can capture it; everything else on stderr.
            out!("{}", secret.expose());
            eprintln!(
                "created key {} for {}; it is shown only once",
                key.id, account.email
            );
        }
        KeysCommand::List { account } => {
            let account = service::account_by_email(store, &account).await?;
            for k in store.list_keys(&account.id).await? {
                out!("{}", describe(&k));
            }
        }
        KeysCommand::Update(args) => {
            let KeyUpdateArgs {
                key,
                name,
                spend_limit_cents,
                no_spend_limit,
                allow_ip,
                clear_allow_ips,
                expires_at,
                no_expiry,
                quota,
                no_quota,
            } = args;
            let update = KeyUpdate {
                name,
                spend_limit: if no_spend_limit {
                    Some(None)
                } else {
                    spend_limit_cents
                        .map(|c| cents(c, "--spend-limit-cents").map(Some))
                        .transpose()?
                },
                allow_ips: if clear_allow_ips {
                    Some(IpAllowlist::default())
                } else if allow_ip.is_empty() {
                    None
                } else {
                    Some(allowlist(&allow_ip)?)
                },
                expires_at: if no_expiry {
                    Some(None)
                } else {
                    expires_at.as_deref().map(timestamp).transpose()?.map(Some)
                },
                quota: if no_quota {
                    Some(None)
                } else {
                    quota.map(Some)
                },
                disabled: None,
            };
            let k = service::update_key(store, &key, &update).await?;
            out!("{}", describe(&k));
        }
        KeysCommand::Disable { key } => set_disabled(store, &key, true).await?,
        KeysCommand::Enable { key } => set_disabled(store, &key, false).await?,
        KeysCommand::Delete { key } => {
            let k = service::delete_key(store, &key).await?;
            out!("deleted {}", k.id);
        }
    }
    Ok(())
}

async fn set_disabled(store: &dyn Store, key: &str, disabled: bool) -> anyhow::Result<()> {
    let update = KeyUpdate {
        disabled: Some(disabled),
        ..Default::default()
    };
    let k = service::update_key(store, key, &update).await?;
    out!("{}", describe(&k));
    Ok(())
}

/// One line of stdin, without its line ending (never echoed or logged).
fn read_password() -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .context("reading the password from stdin")?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

#[cfg(test)]
mod tests {
    use super::printable;

    #[test]
    fn control_characters_are_printed_as_escapes() {
        assert_eq!(printable("plain name é"), "plain name é");
        assert_eq!(
            printable("red\u{1b}[31m\nkey_x\r\u{202e}"),
            "red\\u{1b}[31m\\u{a}key_x\\u{d}\\u{202e}"
        );
        assert_eq!(
            printable("a\u{200b}b\u{2028}c\u{3164}\u{e0041}"),
            "a\\u{200b}b\\u{2028}c\\u{3164}\\u{e0041}"
        );
    }
}
