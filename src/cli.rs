//! The command line: parse settings, then run `serve`, `migrate`, `admin create`, `simulate`
//! or `demo`. Exit status 2 for a bad setting or argument, 1 for a failure while running, 0
//! otherwise.

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

use crate::api::auth::Passwords;
use crate::api::users::validate_account;
use crate::config::{Config, ConfigError, MapsConfig, Settings};
use crate::domain::Role;
use crate::sim::{CityKind, DemoArgs, SimulateArgs};
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
    let mut cli = match Cli::try_parse() {
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
    if let Err(error) = demo_city_settings(
        &mut cli.settings,
        cli.command.as_ref(),
        crate::sim::helsinki::files,
    ) {
        eprintln!("mealkitz: cannot write the Helsinki demo data: {error}");
        return ExitCode::FAILURE;
    }
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
        // The simulator is only a client: a multi-threaded runtime, no actor system (unless it
        // runs the engine itself, for `--notify` or `--whatsapp-share`).
        Command::Simulate(args) if !args.in_process() => {
            match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime.block_on(simulate(args, config.maps)),
                Err(error) => Err(Failure::Runtime(error.into())),
            }
        }
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
        Command::Simulate(args) => simulate_notified(config, args).await,
    }
}

/// `demo --city helsinki` runs its own engine on the built-in Helsinki regions and map data
/// (written to a cache directory by `files`), unless `--regions` / `--map-data` say otherwise.
fn demo_city_settings(
    settings: &mut Settings,
    command: Option<&Command>,
    files: impl FnOnce() -> std::io::Result<crate::sim::helsinki::Files>,
) -> std::io::Result<()> {
    let Some(Command::Demo(args)) = command else {
        return Ok(());
    };
    if args.city != CityKind::Helsinki
        || (settings.dispatch.regions.is_some() && settings.maps.map_data.is_some())
    {
        return Ok(());
    }
    let files = files()?;
    settings.dispatch.regions.get_or_insert(files.regions);
    settings.maps.map_data.get_or_insert(files.map_data);
    Ok(())
}

async fn simulate(args: SimulateArgs, maps: MapsConfig) -> Result<(), Failure> {
    let report = crate::sim::run(args.to_sim(&maps), |_| {}).await?;
    print_report(&report, args.json)
}

/// `simulate --notify` or `--whatsapp-share`: the engine in this process on the configured
/// store, listening on a free port of 127.0.0.1, its WhatsApp and webhooks sent to the
/// simulator's stand-ins (and its WhatsApp webhook taking the stand-ins' app secret); the
/// simulation against it, then the engine and the stand-ins stopped. Notifications are measured
/// with `--notify` only.
async fn simulate_notified(mut config: Config, args: SimulateArgs) -> Result<(), Failure> {
    let stand_ins = crate::sim::StandIns::start().await?;
    stand_ins.configure(&mut config.notify);
    config.http.bind = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    let maps = config.maps.clone();
    let app = Application::build(config).await?;
    let port = app.port();
    let handle = app.stop_handle();
    let server = actix_web::rt::spawn(app.run_until_stopped());
    wait_until_ready(port).await;
    let mut sim = args.to_sim(&maps);
    sim.url = format!("http://127.0.0.1:{port}");
    sim.notify = args.notify.then(|| stand_ins.clone());
    sim.whatsapp.stand_ins = Some(stand_ins.clone());
    let report = crate::sim::run(sim, |_| {}).await;
    handle.stop(true).await;
    let _ = server.await;
    stand_ins.stop().await;
    print_report(&report?, args.json)
}

/// Waits (up to a minute) for the engine on `port` to answer `/ready`.
async fn wait_until_ready(port: u16) {
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
}

/// Prints the report (as JSON with `json`); fails when the run was not clean.
fn print_report(report: &crate::sim::Report, json: bool) -> Result<(), Failure> {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(report).map_err(anyhow::Error::from)?
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
    let maps = config.maps.clone();
    let app = Application::build(config).await?;
    let port = app.port();
    let host = if bind.ip().is_unspecified() {
        "localhost".to_owned()
    } else {
        bind.ip().to_string()
    };
    let base = format!("http://{host}:{port}");
    let sim = args.to_sim(format!("http://127.0.0.1:{port}"), &maps);
    let handle = app.stop_handle();
    let server = actix_web::rt::spawn(app.run_until_stopped());
    // Wait for the engine to be ready before the fleet logs in.
    wait_until_ready(port).await;
    let base_for_print = base.clone();
    let city_line = demo_city_line(args.city, &maps);
    let attribution = maps
        .map_data
        .is_some()
        .then(|| format!("Map data {}", crate::maps::OSM_ATTRIBUTION));
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
            println!("  City:            {city_line}");
            if let Some(attribution) = &attribution {
                println!("  {attribution}");
            }
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

/// The demo banner's line about the city and how its drivers drive.
fn demo_city_line(city: CityKind, maps: &MapsConfig) -> String {
    let roads = match &maps.osrm_url {
        Some(url) => format!("drivers follow roads routed by OSRM at {url}"),
        None => "drivers drive straight lines (start OSRM with scripts/osrm.sh start and pass --osrm-url for roads)".to_owned(),
    };
    match city {
        CityKind::Synthetic => format!("synthetic; {roads}"),
        CityKind::Helsinki => format!("Helsinki, real streets and addresses; {roads}"),
    }
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

    fn scratch_files() -> std::io::Result<crate::sim::helsinki::Files> {
        crate::sim::helsinki::files_in(
            &std::env::temp_dir().join(format!("mealkitz-cli-test-{}", std::process::id())),
        )
    }

    #[test]
    fn demo_in_helsinki_serves_the_built_in_regions_and_map_data() {
        let mut cli = Cli::try_parse_from(["mealkitz", "demo", "--city", "helsinki"]).unwrap();
        demo_city_settings(&mut cli.settings, cli.command.as_ref(), scratch_files).unwrap();
        let config = cli.settings.to_config().unwrap();
        let kamppi = crate::geo::LatLon::new(60.1690, 24.9330).unwrap();
        assert!(config.dispatch.regions.locate(kamppi).is_some());
        assert_eq!(config.dispatch.regions.regions().len(), 2);
        let map_data = config.maps.map_data.expect("map data");
        assert_eq!(
            std::fs::read(&map_data).unwrap(),
            crate::sim::helsinki::MAP_DATA
        );
    }

    #[test]
    fn demo_in_helsinki_keeps_the_regions_and_map_data_the_operator_chose() {
        let files = scratch_files().unwrap();
        let mine = files.regions.with_file_name("mine.geojson");
        std::fs::write(&mine, crate::sim::helsinki::REGIONS_GEOJSON).unwrap();
        let mut cli = Cli::try_parse_from([
            "mealkitz",
            "demo",
            "--city",
            "helsinki",
            "--regions",
            mine.to_str().unwrap(),
            "--map-data",
            "Cargo.toml",
        ])
        .unwrap();
        demo_city_settings(&mut cli.settings, cli.command.as_ref(), || {
            Err(std::io::Error::other("not needed"))
        })
        .unwrap();
        assert_eq!(cli.settings.dispatch.regions, Some(mine));
        assert_eq!(
            cli.settings.maps.map_data,
            Some(std::path::PathBuf::from("Cargo.toml"))
        );
        // The synthetic demo and other commands are left alone.
        for argv in [vec!["mealkitz", "demo"], vec!["mealkitz", "serve"]] {
            let mut cli = Cli::try_parse_from(argv).unwrap();
            demo_city_settings(&mut cli.settings, cli.command.as_ref(), || {
                Err(std::io::Error::other("not needed"))
            })
            .unwrap();
            assert_eq!(cli.settings.dispatch.regions, None);
            assert_eq!(cli.settings.maps.map_data, None);
        }
    }

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
