//! Building and running one engine process: [`Application::build`] wires the store, auth and
//! HTTP server from a [`Config`]; [`Application::run_until_stopped`] serves until a graceful
//! stop, then drains and closes the store.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::{Server, ServerHandle};
use actix_web::middleware::{ErrorHandlers, from_fn};
use actix_web::{App, web};
use anyhow::Context;
use tokio_util::task::TaskTracker;

use crate::actors::{Engine, EngineHooks};
use crate::api::auth::Auth;
use crate::api::limits::Limits;
use crate::api::middleware::{json_error_fallback, observe};
use crate::api::{self, AppState};
use crate::bus::Bus;
use crate::cluster::{Cluster, Router};
use crate::config::Config;
use crate::gateway;
use crate::maps::Maps;
use crate::payments::sandbox::SandboxGateway;
use crate::payments::{PaymentGateway, money_loop};
use crate::store::Store;
use crate::tasks::Tasks;
use crate::telemetry;

/// How long a graceful stop waits for requests in flight. Kubernetes kills a pod 30 s after
/// SIGTERM by default; the issue asks for an exit within 10 s, so stay well under both.
pub const SHUTDOWN_GRACE_SECS: u64 = 8;
/// How long a graceful stop waits for every socket's close frame to be written (a client that
/// does not read is not waited for longer).
const SOCKETS_CLOSE_GRACE: Duration = Duration::from_secs(2);
/// How often expired idempotency keys are deleted.
const IDEMPOTENCY_PURGE_INTERVAL: Duration = Duration::from_secs(3_600);
/// How long a stop waits for the background tasks to finish their step in hand.
const TASKS_STOP_GRACE: Duration = Duration::from_secs(2);
/// Pause between attempts at start-up work once the database answers.
const INIT_RETRY: Duration = Duration::from_secs(1);
/// A command for another replica's region is resent for the lease TTL plus this long: a
/// failover takes the TTL plus the recovery of the region's orders.
const ROUTE_DEADLINE_MARGIN: Duration = Duration::from_secs(5);

/// One running engine: HTTP server plus the background start-up work.
pub struct Application {
    port: u16,
    server: Server,
    state: web::Data<AppState>,
    /// Every background task: cancelled and waited for on stop.
    tasks: Tasks,
    sockets_shutdown: Arc<tokio::sync::watch::Sender<bool>>,
}

/// Stops a running application.
#[derive(Clone)]
pub struct StopHandle {
    server: ServerHandle,
    sockets_shutdown: Arc<tokio::sync::watch::Sender<bool>>,
    socket_writers: TaskTracker,
}

impl StopHandle {
    /// Closes every WebSocket (1001, going away) and stops the server: `graceful` lets
    /// requests in flight finish (up to [`SHUTDOWN_GRACE_SECS`]), otherwise they are dropped.
    pub async fn stop(&self, graceful: bool) {
        let _ = self.sockets_shutdown.send(true);
        if graceful {
            // Sockets are not the HTTP server's once upgraded: their close frames are written
            // before the server's workers, which run them, stop.
            self.socket_writers.close();
            let closed = tokio::time::timeout(SOCKETS_CLOSE_GRACE, self.socket_writers.wait());
            if closed.await.is_err() {
                tracing::warn!(
                    sockets = self.socket_writers.len(),
                    "sockets still closing after the stop's grace"
                );
            }
        }
        self.server.stop(graceful).await;
    }
}

impl Application {
    /// Binds the listener and starts serving. The database may still be down: `/health` answers
    /// at once and the store connects and migrates in the background.
    pub async fn build(config: Config) -> anyhow::Result<Application> {
        telemetry::metrics_handle();
        let store = Store::open_as(&config.database, &config.dispatch.node_id)
            .context("cannot open the database")?;
        let auth_config = config.auth.clone();
        let auth: Arc<Auth> = web::block(move || Auth::new(&auth_config))
            .await
            .context("cannot set up password hashing")?;
        // A key file that cannot be used is a wrong setting: start-up fails naming it.
        auth.signing.load_file().map_err(anyhow::Error::msg)?;
        let bus = config
            .redis
            .as_ref()
            .map(Bus::new)
            .transpose()
            .context("cannot set up Redis")?
            .map(Arc::new);
        let tasks = Tasks::new();
        let payments: Arc<dyn PaymentGateway> = Arc::new(SandboxGateway::new(store.clone()));
        let order_closed = money_loop::spawn(
            &tasks,
            store.clone(),
            payments.clone(),
            config
                .checkout
                .payment_abandon_after
                .max(crate::payments::reconcile::ABANDON_AFTER_MIN),
        );
        let order_events = bus.as_ref().zip(config.redis.as_ref()).map(|(bus, redis)| {
            crate::bus::events::spawn(&tasks, bus.clone(), redis.order_events_maxlen)
        });
        let maps_config = config.maps.clone();
        let speed_kmh = config.dispatch.average_speed_kmh;
        let maps = web::block(move || Maps::from_config(&maps_config, speed_kmh))
            .await
            .context("cannot read the map data")?
            .map_err(anyhow::Error::msg)
            .context("cannot set up the maps service")?;
        let maps = Arc::new(maps);
        let engine = Engine::start(
            config.dispatch.clone(),
            store.clone(),
            EngineHooks {
                order_closed: Some(order_closed.clone()),
                order_events,
            },
            maps.clone(),
        );
        let regions = config
            .dispatch
            .regions
            .regions()
            .iter()
            .map(|region| region.id().to_string())
            .collect();
        let cluster = Arc::new(Cluster::new(
            config.dispatch.node_id.clone(),
            config.dispatch.lease_ttl,
            regions,
            store.clone(),
        ));
        // With Redis, regions are shared among the live replicas and commands travel to their
        // owner; a command keeps being resent for as long as a failover can take.
        let router = bus.as_ref().map(|bus| {
            let router = Router::start(
                bus.clone(),
                config.dispatch.node_id.clone(),
                cluster.ownership(),
                config.dispatch.lease_ttl + ROUTE_DEADLINE_MARGIN,
                Arc::new(engine.clone()),
                &tasks,
            );
            engine.attach_router(router.clone());
            router
        });
        // The notification service: drains the outbox the journal writes into.
        let notifier = crate::notify::Notifier::new(
            store.clone(),
            maps.clone(),
            config.notify.clone(),
            config.dispatch.node_id.clone(),
        )
        .spawn(&tasks);
        // Ordering over WhatsApp: the conversations the webhook's inbox feeds.
        let tokens = auth.clone();
        let chat = crate::chat::Chat::new(crate::chat::ChatParts {
            store: store.clone(),
            maps: maps.clone(),
            engine: engine.clone(),
            notify: config.notify.clone(),
            checkout: config.checkout.clone(),
            node: config.dispatch.node_id.clone(),
            issue_token: Arc::new(move |user| {
                tokens
                    .tokens
                    .issue(user, crate::domain::Role::Customer)
                    .ok()
                    .map(|issued| issued.token)
            }),
        })
        .spawn(&tasks);
        let (sockets_shutdown_tx, sockets_shutdown) = tokio::sync::watch::channel(false);
        let state = web::Data::new(AppState {
            store: store.clone(),
            auth: auth.clone(),
            bus: bus.clone(),
            engine: engine.clone(),
            cluster: cluster.clone(),
            router: router.clone(),
            gateway: Arc::new(config.gateway.clone()),
            sockets_shutdown,
            socket_writers: TaskTracker::new(),
            payments,
            settlement: order_closed,
            checkouts_in_flight: Default::default(),
            menu_cache: Default::default(),
            key_answers: crate::api::key_answers::KeyAnswers::spawn(&tasks, store.clone()),
            checkout: Arc::new(config.checkout.clone()),
            limits: Arc::new(Limits::new(
                &config.checkout,
                config.auth.api_key_requests_per_minute,
                bus.clone(),
            )),
            maps,
            map_tiles_url: config.maps.map_tiles_url.clone(),
            notifier,
            chat,
            notify: Arc::new(config.notify.clone()),
            oidc: config
                .oidc
                .as_ref()
                .map(api::oidc::Oidc::new)
                .transpose()
                .context("cannot set up sign-in with the OpenID provider")?
                .map(Arc::new),
        });

        let listener = TcpListener::bind(config.http.bind)
            .with_context(|| format!("cannot listen on {}", config.http.bind))?;
        let port = listener.local_addr()?.port();
        let app_state = state.clone();
        let openapi = web::Data::new(api::openapi::Document::with_parts([
            <gateway::routes::GatewayDoc as utoipa::OpenApi>::openapi(),
        ]));
        let server = gateway::handover::serve(
            listener,
            &gateway::handover::ServerSettings {
                workers: config.http.workers,
                // Requests in flight also run while the sockets close: together they stay
                // within the grace.
                shutdown_grace_secs: SHUTDOWN_GRACE_SECS - SOCKETS_CLOSE_GRACE.as_secs(),
            },
            move || {
                App::new()
                    .app_data(app_state.clone())
                    .app_data(openapi.clone())
                    .wrap(ErrorHandlers::new().default_handler(json_error_fallback))
                    .wrap(from_fn(observe))
                    .configure(api::configure)
                    .configure(gateway::routes::configure)
                    .default_service(web::to(api::not_found))
            },
        )?;

        let member = cluster.clone();
        tasks.spawn(async move { member.heartbeat().await });
        tasks.spawn(initialise(store, auth, engine, cluster, router.is_some()));
        tracing::info!(
            port,
            backend = config.database.url.backend_name(),
            "mealkitz listening"
        );
        Ok(Application {
            port,
            server,
            state,
            tasks,
            sockets_shutdown: Arc::new(sockets_shutdown_tx),
        })
    }

    /// The bound port (useful with port 0).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A handle that stops the application (sockets first, then the server).
    pub fn stop_handle(&self) -> StopHandle {
        StopHandle {
            server: self.server.handle(),
            sockets_shutdown: self.sockets_shutdown.clone(),
            socket_writers: self.state.socket_writers.clone(),
        }
    }

    /// The dispatch engine (for tests and embedding).
    pub fn engine(&self) -> Engine {
        self.state.engine.clone()
    }

    /// Serves until the server is stopped, then flushes snapshots, gives up the region leases
    /// and closes the store. Nothing else stops it: a database outage suspends the leases, and
    /// a region another replica took over is stepped down from (see [`Cluster`]).
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let served = self.server.await.context("the HTTP server failed");
        // Region ownership stops first, so that nothing claims or takes on a region after
        // the engine has shut down; every loop is waited for.
        if !self.tasks.stop(TASKS_STOP_GRACE).await {
            tracing::warn!(
                running = self.tasks.running(),
                "background tasks still running after the stop's grace"
            );
        }
        self.state.engine.shutdown().await;
        self.state.cluster.release().await;
        self.state.store.close().await;
        tracing::info!("mealkitz stopped");
        served
    }
}

/// Start-up work that needs the database — migrations, the token-signing secret — then, until
/// the stop: this replica's region leases (standing by while another
/// replica holds them, recovering every open order it takes on) and the idempotency-key sweep.
async fn initialise(
    store: Store,
    auth: Arc<Auth>,
    engine: Engine,
    cluster: Arc<Cluster>,
    shared: bool,
) {
    store.migrate_until_ready().await;
    while let Err(error) = auth.tokens.load_or_create_secret(&store).await {
        tracing::warn!(error = %error, "cannot load the token-signing secret yet");
        tokio::time::sleep(INIT_RETRY).await;
    }
    while let Err(error) = auth.signing.load(&store).await {
        tracing::warn!(error = %error, "cannot load the integration signing keys yet");
        tokio::time::sleep(INIT_RETRY).await;
    }
    // Region ownership runs in this task, so that a stop (which cancels it and waits) cannot
    // claim or take on a region after the engine has shut down.
    let ownership = async {
        if shared {
            cluster.share(&engine).await;
        } else {
            cluster.serve_alone(&engine).await;
        }
    };
    // Keys live 24 h; sweep the expired ones now and then.
    let purge = async {
        loop {
            match store.purge_expired_idempotency_keys().await {
                Ok(0) => {}
                Ok(purged) => tracing::info!(purged, "expired idempotency keys removed"),
                Err(error) => tracing::warn!(error = %error, "cannot purge idempotency keys"),
            }
            tokio::time::sleep(IDEMPOTENCY_PURGE_INTERVAL).await;
        }
    };
    // Every replica reloads the signing keys (learning of keys others made) and rotates the
    // signing one when it is due.
    let signing_keys = async {
        loop {
            tokio::time::sleep(auth.signing.reload_interval()).await;
            if let Err(error) = auth.signing.refresh(&store).await {
                tracing::warn!(error = %error, "cannot refresh the integration signing keys");
            }
        }
    };
    tokio::join!(ownership, purge, signing_keys);
}
