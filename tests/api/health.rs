//! `/health`, `/ready` (including a database that comes up late) and `/metrics`.

use std::time::{Duration, Instant};

use tokio::net::TcpListener;

use crate::helpers::{
    Db, TestDb, on_both_backends, redis_url, spawn_app_with, start, test_config, with_redis,
};

on_both_backends! {
    async fn health_and_ready_return_200_when_the_store_answers(app) {
        let health = app.get("/health").await;
        assert_eq!(health.status, 200);
        assert_eq!(health.body, serde_json::json!({"status": "ok"}));
        let ready = app.get("/ready").await;
        assert_eq!(ready.status, 200, "{}", ready.text);
        assert_eq!(ready.body["checks"]["database"], "ok");
    }

    async fn metrics_count_requests_and_time_them_by_route_and_status(app) {
        app.get("/health").await;
        app.get("/no/such/page").await;
        let metrics = app.get("/metrics").await;
        assert_eq!(metrics.status, 200);
        let content_type = metrics.headers["content-type"].to_str().unwrap();
        assert!(content_type.starts_with("text/plain"), "{content_type}");
        let text = metrics.text;
        assert!(
            text.lines().any(|l| l.starts_with("http_requests_total{") && l.contains(r#"route="/health""#) && l.contains(r#"status="200""#)),
            "{text}"
        );
        assert!(text.contains(r#"route="unmatched""#), "unknown paths share one label: {text}");
        assert!(!text.contains("/no/such/page"), "{text}");
        assert!(
            text.lines().any(|l| l.starts_with("http_request_duration_seconds_bucket{") && l.contains(r#"route="/health""#)),
            "{text}"
        );
    }
}

/// A port on loopback where nothing listens (for now).
async fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().port()
}

/// Forwards every connection on `port` to the real PostgreSQL server: the database "comes up".
async fn start_postgres_proxy(port: u16) {
    let upstream = crate::helpers::postgres_admin_url();
    let upstream = upstream
        .split('@')
        .nth(1)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    actix_web::rt::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let upstream = upstream.clone();
            actix_web::rt::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(upstream).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
}

#[actix_web::test]
async fn starts_while_postgres_is_down_then_connects_and_migrates_when_it_answers() {
    let db = TestDb::create(Db::Postgres).await;
    let port = free_port().await;
    let name = db.url.rsplit('/').next().unwrap().to_owned();
    let mut config = test_config(&db);
    config.database.url = mealkitz::config::DatabaseUrl::Postgres(mealkitz::config::Secret::new(
        format!("postgres://postgres@127.0.0.1:{port}/{name}"),
    ));
    let app = start(db, config).await;

    assert_eq!(app.get("/health").await.status, 200);
    let ready = app.get("/ready").await;
    assert_eq!(ready.status, 503, "{}", ready.text);
    assert_eq!(ready.body["status"], "not_ready");
    assert_ne!(ready.body["checks"]["database"], "ok", "{}", ready.text);
    assert_eq!(ready.body["error"]["code"], "not_ready");
    assert!(
        ready.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("database"),
        "{}",
        ready.text
    );
    // Requests that need the database fail fast and clearly meanwhile.
    let early = app
        .register("early@example.com", "correct horse battery", "customer")
        .await;
    early.assert_error(503, "store_unavailable");
    assert!(early.headers.get("retry-after").is_some());

    start_postgres_proxy(port).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while app.get("/ready").await.status != 200 {
        assert!(
            Instant::now() < deadline,
            "never became ready after the database came up"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let user = app.signed_up("customer").await;
    assert_eq!(app.get_authed("/api/v1/me", &user.token).await.status, 200);
}

#[actix_web::test]
async fn ready_checks_redis_when_it_is_configured() {
    let db = TestDb::create(Db::Sqlite).await;
    let config = with_redis(test_config(&db), &redis_url());
    let app = spawn_app_with(db, config).await;
    let ready = app.get("/ready").await;
    assert_eq!(ready.body["checks"]["redis"], "ok", "{}", ready.text);
}

#[actix_web::test]
async fn ready_reports_redis_degraded_but_stays_ready_when_it_is_unreachable() {
    // Without Redis the regions this replica holds keep working (only commands for other
    // replicas' regions fail), so it stays in the load balancer and says what is degraded.
    let db = TestDb::create(Db::Sqlite).await;
    let port = free_port().await;
    let config = with_redis(test_config(&db), &format!("redis://127.0.0.1:{port}"));
    let app = start(db, config).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let ready = loop {
        let ready = app.get("/ready").await;
        if ready.status == 200 || Instant::now() > deadline {
            break ready;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(ready.status, 200, "{}", ready.text);
    assert_eq!(ready.body["checks"]["database"], "ok", "{}", ready.text);
    assert_eq!(ready.body["checks"]["dispatch"], "ok", "{}", ready.text);
    for check in ["redis", "routing"] {
        let value = ready.body["checks"][check].as_str().unwrap_or_default();
        assert!(value.starts_with("degraded: "), "{check}: {}", ready.text);
    }
}
