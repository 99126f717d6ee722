//! The `millwright` binary: parses the command line and calls the library.

use std::{path::PathBuf, process::ExitCode};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use millwright::{accounts, config::Config, credits, crypto, db::Db, graphql, ids, telemetry};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "millwright",
    version,
    about = "Self-hosted unified API for industrial systems"
)]
struct Cli {
    /// Path of a TOML configuration file; `MILLWRIGHT_*` variables override it.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Migrate the database, then serve the API and run the background workers (the default).
    Serve,
    /// Apply pending migrations and exit.
    Migrate,
    /// Print the GraphQL SDL.
    Schema,
    /// Manage accounts.
    #[command(subcommand)]
    Account(AccountCommand),
    /// Manage connection credits.
    #[command(subcommand)]
    Credits(CreditsCommand),
    /// Manage the keys that encrypt stored credentials and webhook secrets.
    #[command(subcommand)]
    Keys(KeysCommand),
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Print a new random key (base64 of 32 bytes) for `MILLWRIGHT_ENCRYPTION_KEY`.
    Generate,
    /// Re-encrypt every stored credential and webhook secret with the current key (safe while
    /// servers run, and safe to run again); exits non-zero if some value no key decrypts.
    Rotate {
        /// Rows read and rewritten per write transaction.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=10_000))]
        batch_size: u64,
    },
}

#[derive(Subcommand)]
enum AccountCommand {
    /// Create an account and print its first API key (shown once).
    Create {
        #[arg(long)]
        name: String,
        #[arg(long, default_value_t = 0)]
        credits: i64,
        /// Print `{"account_id": …, "api_key": …}`.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum CreditsCommand {
    /// Add credits to an account's pool.
    Grant {
        #[arg(long)]
        account: String,
        #[arg(long)]
        amount: i64,
        #[arg(long)]
        note: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Schema) => return print(&graphql::sdl()),
        Some(Command::Keys(KeysCommand::Generate)) => return print(&crypto::generate_key()),
        _ => {}
    }
    let (config, retired) = match Config::load(cli.config.as_deref()) {
        Ok(loaded) => (loaded.config, loaded.retired),
        Err(err) => {
            print_error(&format!("millwright: {err}"));
            return ExitCode::from(2);
        }
    };
    telemetry::init(config.process.log_format);
    for key in retired {
        tracing::warn!(
            key = key.key,
            why = key.reason(),
            "a retired setting is ignored"
        );
    }
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    match runtime.block_on(dispatch(cli.command.unwrap_or(Command::Serve), config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = format!("{err:#}"), "millwright failed");
            print_error(&format!("millwright: {err:#}"));
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(command: Command, config: Config) -> anyhow::Result<()> {
    match command {
        Command::Serve => serve(config).await,
        Command::Migrate => {
            Db::connect(&config).await?.migrate().await?;
            tracing::info!("migrations applied");
            Ok(())
        }
        Command::Schema | Command::Keys(KeysCommand::Generate) => Ok(()),
        Command::Keys(KeysCommand::Rotate { batch_size }) => rotate_keys(&config, batch_size).await,
        Command::Account(AccountCommand::Create {
            name,
            credits,
            json,
        }) => {
            let db = connect_migrated(&config).await?;
            let created = accounts::create_account(&db, &name, credits).await?;
            let account_id = ids::encode(ids::Kind::Account, created.account.id);
            if json {
                let out = serde_json::json!({ "account_id": account_id, "api_key": created.key });
                print(&out.to_string());
            } else {
                print(&format!(
                    "account {account_id} created\nAPI key (shown once): {}",
                    created.key
                ));
            }
            Ok(())
        }
        Command::Credits(CreditsCommand::Grant {
            account,
            amount,
            note,
        }) => {
            let db = connect_migrated(&config).await?;
            let account_id = ids::decode(ids::Kind::Account, &account)?;
            let account = credits::grant(&db, account_id, amount, note).await?;
            print(&format!(
                "granted {amount} credits; pool total {}, available {}",
                account.credits_total,
                account.credits_total - account.credits_used
            ));
            Ok(())
        }
    }
}

async fn rotate_keys(config: &Config, batch_size: u64) -> anyhow::Result<()> {
    let cipher = crypto::Cipher::from_config(config)?;
    let db = connect_migrated(config).await?;
    tracing::info!(key_id = %cipher.current_key_id(), "re-encrypting with the current key");
    let report = crypto::rotate::rotate(&db, &cipher, batch_size).await?;
    db.close().await.context("closing the database")?;
    print(&report.lines().join("\n"));
    match report.unreadable() {
        0 => Ok(()),
        n => anyhow::bail!(
            "{n} values decrypt with no configured key and were left as they are; \
             add the key that sealed them to MILLWRIGHT_ENCRYPTION_OLD_KEYS and run again"
        ),
    }
}

async fn connect_migrated(config: &Config) -> anyhow::Result<Db> {
    let db = Db::connect(config)
        .await
        .context("connecting to the database")?;
    db.migrate().await.context("migrating the database")?;
    Ok(db)
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let listener = TcpListener::bind(config.http.listen)
        .await
        .with_context(|| format!("binding {}", config.http.listen))?;
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    millwright::run(config, listener, shutdown).await
}

/// SIGINT or SIGTERM start a graceful shutdown.
async fn cancel_on_signal(shutdown: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
    tracing::info!("shutdown requested");
    shutdown.cancel();
}

#[expect(clippy::print_stdout, reason = "the CLI's output is its interface")]
fn print(text: &str) -> ExitCode {
    println!("{text}");
    ExitCode::SUCCESS
}

/// Writes a failure to standard error (the log may not exist yet, or go elsewhere).
#[expect(
    clippy::print_stderr,
    reason = "configuration errors come before logging exists"
)]
fn print_error(text: &str) {
    eprintln!("{text}");
}
