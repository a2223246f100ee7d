//! Bad requests of every kind get a 4xx in the standard error shape, never a 500.

use crate::helpers::{Db, Reply, spawn_app};

async fn post_raw(
    app: &crate::helpers::TestApp,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> Reply {
    let mut request = app.client.post(app.url("/api/v1/users")).body(body);
    if let Some(content_type) = content_type {
        request = request.header("content-type", content_type);
    }
    Reply::read(request.send().await.unwrap()).await
}

#[actix_web::test]
async fn malformed_json_returns_400() {
    let app = spawn_app(Db::Sqlite).await;
    for body in [&b"{"[..], b"{\"email\": }", b"not json", b""] {
        post_raw(&app, Some("application/json"), body.to_vec())
            .await
            .assert_error(400, "malformed_json");
    }
}

#[actix_web::test]
async fn a_body_that_is_not_declared_json_returns_415() {
    let app = spawn_app(Db::Sqlite).await;
    let body =
        br#"{"email":"a@b.co","password":"correct horse","name":"A","role":"customer"}"#.to_vec();
    post_raw(&app, Some("text/plain"), body.clone())
        .await
        .assert_error(415, "unsupported_media_type");
    post_raw(&app, None, body.clone())
        .await
        .assert_error(415, "unsupported_media_type");
    post_raw(&app, Some("application/x-www-form-urlencoded"), body)
        .await
        .assert_error(415, "unsupported_media_type");
}

#[actix_web::test]
async fn a_body_over_64_kib_returns_413() {
    let app = spawn_app(Db::Sqlite).await;
    let padding = "x".repeat(64 * 1024);
    let body = format!(
        r#"{{"email":"a@b.co","password":"correct horse","name":"{padding}","role":"customer"}}"#
    );
    post_raw(&app, Some("application/json"), body.into_bytes())
        .await
        .assert_error(413, "payload_too_large");

    // The same without a Content-Length: streamed in chunks, cut off at the limit.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..100).map(|_| Ok(vec![b' '; 1024])).collect();
    let stream = futures_util::stream::iter(chunks);
    let reply = Reply::read(
        app.client
            .post(app.url("/api/v1/users"))
            .header("content-type", "application/json")
            .body(reqwest::Body::wrap_stream(stream))
            .send()
            .await
            .unwrap(),
    )
    .await;
    reply.assert_error(413, "payload_too_large");
}

#[actix_web::test]
async fn an_unknown_route_returns_404_and_a_wrong_method_405() {
    let app = spawn_app(Db::Sqlite).await;
    app.get("/no/such/route")
        .await
        .assert_error(404, "not_found");
    app.get("/api/v1/nothing")
        .await
        .assert_error(404, "not_found");
    app.get("/api/v1/users")
        .await
        .assert_error(405, "method_not_allowed");
    let delete = Reply::read(app.client.delete(app.url("/health")).send().await.unwrap()).await;
    delete.assert_error(405, "method_not_allowed");
}

#[actix_web::test]
async fn every_response_carries_a_request_id_and_adopts_a_valid_one() {
    let app = spawn_app(Db::Sqlite).await;
    let generated = app.get("/health").await;
    let id = generated
        .headers
        .get("x-request-id")
        .unwrap()
        .to_str()
        .unwrap();
    assert_eq!(id.len(), 36, "{id}");

    let adopted = app
        .client
        .get(app.url("/health"))
        .header("x-request-id", "trace-abc.123")
        .send()
        .await
        .unwrap();
    assert_eq!(adopted.headers()["x-request-id"], "trace-abc.123");

    let refused = app
        .client
        .get(app.url("/health"))
        .header("x-request-id", "bad id\twith tab")
        .send()
        .await
        .unwrap();
    assert_ne!(refused.headers()["x-request-id"], "bad id\twith tab");
}
