//! The command line: parse settings, then run `serve`, `migrate` or `admin create`. Exit status
//! 2 for a bad setting or argument, 1 for a failure while running, 0 otherwise.

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

use crate::api::auth::Passwords;
use crate::api::users::validate_account;
use crate::config::{Config, ConfigError, Settings};
use crate::domain::Role;
use crate::sim::{DemoArgs, SimulateArgs};
use crate::startup::Application;
use crate::store::{NewUser, Store, StoreError};
use crate::{shutdown, telemetry};

/// `mealkitz`: the MealKitz Dispatch engine.
#[derive(Debug, Parser)]
#[command(name = "mealkitz", version, about, long_about = None)]
pub struct Cli {
    #[command(flatten)]
    pub settings: Settings,
    /// What to do; `serve` when omitted.
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the engine: HTTP API, WebSockets and dispatch (the default).
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Administrative tasks.
    Admin {
        #[command(subcommand)]
        action: AdminCommand,
    },
    /// Run a simulated city (merchants, drivers, customers) against a running engine.
    Simulate(SimulateArgs),
    /// Serve on the embedded store with a simulated fleet running, for a first look.
    Demo(DemoArgs),
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Create a user with the admin role (the only way to make one).
    Create {
        #[arg(long)]
        email: String,
        #[arg(long, env = "MEALKITZ_ADMIN_PASSWORD", hide_env_values = true)]
        password: String,
        #[arg(long, default_value = "Administrator")]
        name: String,
    },
}

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
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // A value clap refused is a bad setting: one line naming it. Anything else (help,
        // version, an unknown flag) clap prints and exits with itself.
        Err(error) => match ConfigError::from_clap(&error, &Cli::command()) {
            Some(bad) => {
                eprintln!("mealkitz: {bad}");
                return ExitCode::from(2);
            }
            None => error.exit(),
        },
    };
    let config = match cli.settings.to_config() {
        Ok(config) => config,
        Err(error) => {
            eprintln!("mealkitz: {error}");
            return ExitCode::from(2);
        }
    };
    telemetry::init_tracing(config.log.format);
    let command = cli.command.unwrap_or(Command::Serve);
    let outcome = match command {
        // The simulator is only a client: a multi-threaded runtime, no actor system.
        Command::Simulate(args) => match tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime.block_on(simulate(args)),
            Err(error) => Err(Failure::Runtime(error.into())),
        },
        command => actix_web::rt::System::new().block_on(run(command, config)),
    };
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
        Command::Demo(args) => demo(config, args).await,
        Command::Simulate(_) => unreachable!("run on its own runtime in main"),
    }
}

async fn simulate(args: SimulateArgs) -> Result<(), Failure> {
    let report = crate::sim::run(args.to_sim(), |_| {}).await?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).map_err(anyhow::Error::from)?
        );
    } else {
        print!("{}", report.table());
    }
    if report.clean() {
        Ok(())
    } else {
        Err(Failure::Runtime(anyhow::anyhow!(
            "the simulation saw errors or left orders open (see the report)"
        )))
    }
}

/// The engine on its configured store (the embedded one by default) with a small simulated
/// fleet, until Ctrl-C.
async fn demo(config: Config, args: DemoArgs) -> Result<(), Failure> {
    let bind = config.http.bind;
    let app = Application::build(config).await?;
    let port = app.port();
    let host = if bind.ip().is_unspecified() {
        "localhost".to_owned()
    } else {
        bind.ip().to_string()
    };
    let base = format!("http://{host}:{port}");
    let sim = args.to_sim(format!("http://127.0.0.1:{port}"));
    let handle = app.stop_handle();
    let server = actix_web::rt::spawn(app.run_until_stopped());
    // Wait for the engine to be ready before the fleet logs in.
    let client = reqwest::Client::new();
    for _ in 0..600 {
        let ready = client
            .get(format!("http://127.0.0.1:{port}/ready"))
            .send()
            .await;
        if ready.is_ok_and(|r| r.status().is_success()) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let base_for_print = base.clone();
    // The fleet runs until the signal: it is cancelled then, and waited for.
    let fleet = crate::tasks::Tasks::new();
    fleet.spawn(async move {
        let _ = crate::sim::run(sim, move |started| {
            let crate::sim::Started {
                merchant_email,
                customer_email,
                mut first_order,
            } = started;
            println!("MealKitz demo is running at {base_for_print}/");
            println!(
                "  Merchant board:  {base_for_print}/merchant   (log in as {merchant_email} / {})",
                crate::sim::SIM_PASSWORD
            );
            println!(
                "  Driver app:      {base_for_print}/driver     (create your own driver account)"
            );
            println!(
                "  Order food:      {base_for_print}/order      (log in as {customer_email} / {})",
                crate::sim::SIM_PASSWORD
            );
            actix_web::rt::spawn(async move {
                if first_order.wait_for(Option::is_some).await.is_ok()
                    && let Some(id) = first_order.borrow().clone()
                {
                    println!(
                        "  Live tracking:   {base_for_print}/track/{id}   (as {customer_email})"
                    );
                }
            });
            println!("Press Ctrl-C to stop.");
        })
        .await;
    });
    shutdown::signal().await;
    fleet.stop(DEMO_FLEET_STOP_GRACE).await;
    handle.stop(true).await;
    let _ = server.await;
    Ok(())
}

/// How long the demo waits for its simulated fleet to stop after Ctrl-C.
const DEMO_FLEET_STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn a_bad_value_after_a_subcommand_names_its_flag_in_one_line() {
        let cases = [
            (["mealkitz", "simulate", "--drivers", "0"], "--drivers"),
            (["mealkitz", "demo", "--time-scale", "fast"], "--time-scale"),
            (
                ["mealkitz", "migrate", "--bind", "x"],
                "--bind / MEALKITZ_BIND",
            ),
        ];
        for (argv, setting) in cases {
            let error = Cli::try_parse_from(argv).expect_err(setting);
            let bad = ConfigError::from_clap(&error, &Cli::command()).expect(setting);
            assert_eq!(bad.setting, setting);
            assert!(!bad.to_string().contains('\n'), "{bad}");
        }
    }
}
