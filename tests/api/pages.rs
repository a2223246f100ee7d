//! The web pages: served from the binary, with a policy that forbids anything from elsewhere.

use crate::helpers::{Db, spawn_app};

#[actix_web::test]
async fn every_page_is_served_with_a_strict_content_security_policy() {
    let app = spawn_app(Db::Sqlite).await;
    for path in [
        "/",
        "/merchant",
        "/keys",
        "/order",
        "/driver",
        &format!("/track/{}", uuid::Uuid::now_v7()),
    ] {
        let response = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let headers = response.headers().clone();
        assert!(
            headers["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/html"),
            "{path}"
        );
        let policy = headers["content-security-policy"].to_str().unwrap();
        assert!(
            policy.contains("default-src 'self'") && policy.contains("connect-src 'self'"),
            "{policy}"
        );
        let body = response.text().await.unwrap();
        assert!(
            !body.contains("http://") && !body.contains("https://"),
            "{path} references another origin"
        );
    }
    for (asset, kind) in [
        ("app.css", "text/css"),
        ("common.js", "text/javascript"),
        ("map.js", "text/javascript"),
        ("icon.svg", "image/svg+xml"),
    ] {
        let response = app
            .client
            .get(app.url(&format!("/assets/{asset}")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{asset}");
        assert!(
            response.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with(kind),
            "{asset}"
        );
    }
    app.get("/assets/nothing.js")
        .await
        .assert_error(404, "not_found");
    app.get("/assets/index.html")
        .await
        .assert_error(404, "not_found");
    app.get("/assets/..%2FCargo.toml")
        .await
        .assert_error(404, "not_found");
}

#[actix_web::test]
async fn the_regions_are_served_as_geojson_for_maps() {
    let app = spawn_app(Db::Sqlite).await;
    let response = app
        .client
        .get(app.url("/api/v1/regions"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let regions: serde_json::Value = response.json().await.unwrap();
    assert_eq!(regions["type"], "FeatureCollection");
    let ids: Vec<&str> = regions["features"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["properties"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 4);
    for id in ["nw", "ne", "sw", "se"] {
        assert!(ids.contains(&id), "{ids:?}");
    }
}
