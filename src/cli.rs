//! The command line: parse settings, then run `serve`, `migrate` or `admin create`. Exit status
//! 2 for a bad setting or argument, 1 for a failure while running, 0 otherwise.

use std::process::ExitCode;

use clap::Parser;

use crate::api::auth::Passwords;
use crate::api::users::validate_account;
use crate::config::{AdminCommand, Cli, Command, Config};
use crate::domain::Role;
use crate::startup::Application;
use crate::store::{NewUser, Store, StoreError};
use crate::{shutdown, telemetry};

/// How a command failed.
enum Failure {
    /// Bad input from the operator: exit status 2.
    Usage(String),
    /// Something went wrong while running: exit status 1.
    Runtime(anyhow::Error),
}

impl From<anyhow::Error> for Failure {
    fn from(error: anyhow::Error) -> Self {
        Failure::Runtime(error)
    }
}

/// Entry point of the `mealkitz` binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match cli.settings.to_config() {
        Ok(config) => config,
        Err(error) => {
            eprintln!("mealkitz: {error}");
            return ExitCode::from(2);
        }
    };
    telemetry::init_tracing(config.log.format);
    let command = cli.command.unwrap_or(Command::Serve);
    let outcome = actix_web::rt::System::new().block_on(run(command, config));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(message)) => {
            eprintln!("mealkitz: {message}");
            ExitCode::from(2)
        }
        Err(Failure::Runtime(error)) => {
            tracing::error!(error = ?error, "mealkitz failed");
            eprintln!("mealkitz: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command, config: Config) -> Result<(), Failure> {
    match command {
        Command::Serve => serve(config).await,
        Command::Migrate => {
            let store = migrated_store(&config).await?;
            store.close().await;
            println!("migrations applied ({})", store.backend().as_str());
            Ok(())
        }
        Command::Admin {
            action:
                AdminCommand::Create {
                    email,
                    password,
                    name,
                },
        } => create_admin(&config, &email, password, &name).await,
    }
}

async fn serve(config: Config) -> Result<(), Failure> {
    let app = Application::build(config).await?;
    let handle = app.stop_handle();
    actix_web::rt::spawn(async move {
        shutdown::signal().await;
        let graceful = handle.stop(true);
        // A second signal while draining means "now".
        tokio::select! {
            () = graceful => {}
            () = shutdown::signal() => {
                tracing::warn!("second signal; stopping at once");
                handle.stop(false).await;
            }
        }
    });
    app.run_until_stopped().await?;
    Ok(())
}

async fn migrated_store(config: &Config) -> Result<Store, Failure> {
    let store = Store::open(&config.database).map_err(anyhow::Error::from)?;
    store
        .migrate()
        .await
        .map_err(|e| Failure::Runtime(anyhow::Error::from(e).context("migrations failed")))?;
    Ok(store)
}

async fn create_admin(
    config: &Config,
    email: &str,
    password: String,
    name: &str,
) -> Result<(), Failure> {
    let (email, name) = validate_account(email, &password, name)
        .map_err(|error| Failure::Usage(error.body().error.message))?;
    let store = migrated_store(config).await?;
    let password_hash = Passwords::new()
        .hash(password)
        .await
        .map_err(|e| Failure::Runtime(anyhow::anyhow!("cannot hash the password: {e}")))?;
    let created = store
        .create_user(NewUser {
            email,
            name,
            role: Role::Admin,
            password_hash,
        })
        .await;
    store.close().await;
    match created {
        Ok(user) => {
            println!("admin {} created with id {}", user.email, user.id);
            Ok(())
        }
        Err(StoreError::Duplicate(_)) => Err(Failure::Runtime(anyhow::anyhow!(
            "an account with this email already exists"
        ))),
        Err(other) => Err(Failure::Runtime(other.into())),
    }
}
