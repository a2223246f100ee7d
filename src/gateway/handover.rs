//! The HTTP server, built so that a WebSocket handshake hands its TCP connection to the gateway.
//!
//! actix-web keeps an HTTP/1 dispatcher, with an 8 KiB read and an 8 KiB write buffer, for the
//! whole life of a socket it upgraded: two thirds of an idle driver's memory. Here the server
//! is assembled from actix-http with an *upgrade* service: a request that asks to switch
//! protocols goes through the same application (routes, authentication, middleware, error
//! bodies) as any other, and when its handler answers 101 with a [`Handover`], the response is
//! written, the dispatcher and its buffers are dropped, and the handover gets the bare stream
//! ([`super::wire`]). Any other answer is written and the connection closed.

use std::convert::Infallible;
use std::fmt;
use std::net::TcpListener;
use std::rc::Rc;
use std::time::Duration;

use actix_codec::Framed;
use actix_http::body::{BodySize, BoxBody, MessageBody};
use actix_http::{ConnectionType, HttpService, Request, Response, StatusCode, h1};
use actix_service::{
    IntoServiceFactory, Service, ServiceFactory, fn_factory, fn_service, map_config,
};
use actix_web::dev::{AppConfig, Server, ServiceResponse};
use futures_util::SinkExt;
use tokio::net::TcpStream;

use super::wire::Connection;

/// How long a client has to send a request's head, and to read a response before its
/// connection is dropped: actix-web's defaults, kept.
const CLIENT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
const CLIENT_DISCONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// What a handler that accepted a WebSocket handshake does with the connection once its 101
/// has been written; put in the response's extensions.
pub struct Handover(Box<dyn FnOnce(Connection)>);

impl Handover {
    pub fn new(start: impl FnOnce(Connection) + 'static) -> Self {
        Handover(Box::new(start))
    }
}

/// How a server is run: workers, and how long a graceful stop waits for requests in flight.
pub struct ServerSettings {
    pub workers: usize,
    pub shutdown_grace_secs: u64,
}

/// Serves the application `app` builds on `listener`, with the stop left to the caller (no
/// signal handlers). `app` is called twice per worker: for ordinary requests and for
/// handshakes; both applications share state through their application data.
pub fn serve<F, I, S, B>(
    listener: TcpListener,
    settings: &ServerSettings,
    app: F,
) -> std::io::Result<Server>
where
    F: Fn() -> I + Send + Clone + 'static,
    I: IntoServiceFactory<S, Request>,
    S: ServiceFactory<
            Request,
            Config = AppConfig,
            Response = ServiceResponse<B>,
            Error = actix_web::Error,
        > + 'static,
    S::InitError: fmt::Debug,
    S::Service: 'static,
    B: MessageBody + 'static,
{
    let addr = listener.local_addr()?;
    let builder = Server::build();
    // Idle keep-alive connections end as soon as a graceful stop starts, as actix-web's own
    // server arranges (the hook is the one it uses, hidden from actix-http's documentation).
    let stopping = builder.graceful_shutdown_signal();
    builder
        .workers(settings.workers)
        .disable_signals()
        .shutdown_timeout(settings.shutdown_grace_secs)
        .listen("mealkitz-http", listener, move || {
            let handshakes = app.clone();
            let upgrade = fn_factory(move || {
                let factory = map_config(handshakes().into_factory(), |()| AppConfig::default());
                async move {
                    let app = Rc::new(factory.new_service(()).await.map_err(|error| {
                        tracing::error!(?error, "cannot build the handshake service");
                    })?);
                    Ok::<_, ()>(fn_service(move |(request, framed)| {
                        hand_over(app.clone(), request, framed)
                    }))
                }
            });
            let stopping = stopping.clone();
            HttpService::build()
                .graceful_shutdown_signal(move || {
                    let stopping = stopping.clone();
                    async move { stopping.notified().await }
                })
                .client_request_timeout(CLIENT_REQUEST_TIMEOUT)
                .client_disconnect_timeout(CLIENT_DISCONNECT_TIMEOUT)
                .h1_allow_half_closed(true)
                .local_addr(addr)
                .upgrade(upgrade)
                .finish(map_config(app().into_factory(), |()| AppConfig::default()))
                .tcp()
        })
        .map(actix_server::ServerBuilder::run)
}

/// Answers a request that asked to switch protocols, and hands the connection over if the
/// application accepted it.
async fn hand_over<S, B>(
    app: Rc<S>,
    request: Request,
    mut framed: Framed<TcpStream, h1::Codec>,
) -> Result<(), Infallible>
where
    S: Service<Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody + 'static,
{
    let mut response: Response<BoxBody> = match app.call(request).await {
        Ok(response) => response.map_into_boxed_body().into(),
        Err(error) => error.error_response().into(),
    };
    let handover = response.extensions_mut().remove::<Handover>();
    let (mut head, body) = response.into_parts();
    match handover {
        Some(Handover(start)) if head.status() == StatusCode::SWITCHING_PROTOCOLS => {
            if let Err(error) = framed.send((head, BodySize::None).into()).await {
                tracing::debug!(%error, "client gone before its handshake was answered");
                return Ok(());
            }
            let parts = framed.into_parts();
            // Frames are small and each is news: never hold one back for the next.
            let _ = parts.io.set_nodelay(true);
            start(Connection {
                io: parts.io,
                early: parts.read_buf,
            });
        }
        _ => {
            // Refused (or not a handshake at all): the answer, then the end of the connection,
            // whose further bytes the server never read as HTTP.
            head.head_mut().set_connection_type(ConnectionType::Close);
            let body = actix_http::body::to_bytes(body).await.unwrap_or_default();
            let size = BodySize::Sized(body.len() as u64);
            // Written in one go: a client may read only what arrived with the head.
            let written = async {
                framed.feed((head, size).into()).await?;
                if !body.is_empty() {
                    framed.feed(h1::Message::Chunk(Some(body))).await?;
                }
                framed.send(h1::Message::Chunk(None)).await
            };
            if let Err(error) = written.await {
                tracing::debug!(%error, "client gone before a refused handshake was answered");
            }
        }
    }
    Ok(())
}
