//! The maps routes on the Helsinki extract (OpenStreetMap contributors, ODbL): typed addresses,
//! reverse geocoding, streets in a box, the map description, and the errors around them.

use mealkitz::config::Config;

use crate::helpers::{Db, TestApp, TestDb, spawn_app, spawn_app_with, test_config};

fn data(file: &str) -> String {
    format!("{}/data/helsinki/{file}", env!("CARGO_MANIFEST_DIR"))
}

/// An application with the Helsinki extract and regions loaded, plus `extra` flags.
async fn helsinki_app(extra: &[&str]) -> TestApp {
    let db = TestDb::create(Db::Sqlite).await;
    let mut config = test_config(&db);
    let map_data = format!("--map-data={}", data("Helsinki.osm.pbf"));
    let regions = format!("--regions={}", data("regions.geojson"));
    let mut args = vec![map_data.as_str(), regions.as_str()];
    args.extend_from_slice(extra);
    let helsinki = Config::from_args(args).expect("the Helsinki settings are valid");
    config.maps = helsinki.maps;
    config.dispatch.regions = helsinki.dispatch.regions;
    spawn_app_with(db, config).await
}

/// `text` with spaces and commas escaped for a query string.
fn encoded(text: &str) -> String {
    text.replace('%', "%25")
        .replace(' ', "%20")
        .replace(',', "%2C")
        .replace('&', "%26")
        .replace('ö', "%C3%B6")
}

/// How many decimals `x` is written with.
fn decimals(x: f64) -> usize {
    x.to_string().split_once('.').map_or(0, |(_, d)| d.len())
}

#[actix_web::test]
async fn geocoding_finds_typed_helsinki_addresses() {
    let app = helsinki_app(&[]).await;
    let user = app.signed_up("customer").await;
    let cases = [
        ("Mannerheimintie 5", "Mannerheimintie 5, Helsinki"),
        ("mannerheimintie 5, helsinki", "Mannerheimintie 5, Helsinki"),
        ("MANNERHEIMINTIE", "Mannerheimintie, Helsinki"),
        ("mannerh", "Mannerheimintie, Helsinki"),
        (
            "aleksanterinkatu 52 helsinki",
            "Aleksanterinkatu 52, Helsinki",
        ),
        ("aleksanterinktu 52", "Aleksanterinkatu 52, Helsinki"),
        ("pohjoisesplanadi", "Pohjoisesplanadi, Helsinki"),
        ("yrjonkatu", "Yrjönkatu, Helsinki"),
        ("Yrjönkatu", "Yrjönkatu, Helsinki"),
    ];
    for (typed, expected) in cases {
        let path = format!("/api/v1/geocode?q={}", encoded(typed));
        let reply = app.get_authed(&path, &user.token).await;
        assert_eq!(reply.status, 200, "{typed}: {}", reply.text);
        let results = reply.body["results"].as_array().unwrap();
        assert!(
            !results.is_empty() && results.len() <= 10,
            "{typed}: {}",
            reply.text
        );
        assert_eq!(results[0]["label"], expected, "{typed}: {}", reply.text);
        let (lat, lon) = (
            results[0]["lat"].as_f64().unwrap(),
            results[0]["lon"].as_f64().unwrap(),
        );
        assert!(
            (60.16..60.18).contains(&lat) && (24.93..24.96).contains(&lon),
            "{typed}: {lat},{lon}"
        );
    }

    let three = app
        .get_authed("/api/v1/geocode?q=mannerheimintie&limit=3", &user.token)
        .await;
    assert_eq!(
        three.body["results"].as_array().unwrap().len(),
        3,
        "{}",
        three.text
    );
    let capped = app
        .get_authed("/api/v1/geocode?q=mannerheimintie&limit=50", &user.token)
        .await;
    assert_eq!(
        capped.body["results"].as_array().unwrap().len(),
        10,
        "{}",
        capped.text
    );
    let nothing = app
        .get_authed("/api/v1/geocode?q=xyzzyqwerty", &user.token)
        .await;
    assert_eq!(nothing.status, 200);
    assert_eq!(nothing.body["results"], serde_json::json!([]));

    let near = app
        .get_authed(
            "/api/v1/geocode?q=mannerheimintie&near=60.1725,24.9365&limit=1",
            &user.token,
        )
        .await;
    assert_eq!(near.status, 200, "{}", near.text);
    assert_eq!(
        near.body["results"][0]["label"],
        "Mannerheimintie, Helsinki"
    );

    let metrics = app.get("/metrics").await;
    assert!(
        metrics
            .text
            .lines()
            .any(|l| l.starts_with("maps_geocode_seconds_count")),
        "{}",
        metrics.text
    );
}

#[actix_web::test]
async fn geocoding_rejects_empty_overlong_and_malformed_input_with_422() {
    let app = helsinki_app(&[]).await;
    let user = app.signed_up("merchant").await;
    let long = "a".repeat(201);
    for path in [
        "/api/v1/geocode".to_owned(),
        "/api/v1/geocode?q=".to_owned(),
        "/api/v1/geocode?q=%20%20%20".to_owned(),
        format!("/api/v1/geocode?q={long}"),
        "/api/v1/geocode?q=mannerheimintie&limit=0".to_owned(),
        "/api/v1/geocode?q=mannerheimintie&limit=ten".to_owned(),
    ] {
        let reply = app.get_authed(&path, &user.token).await;
        reply.assert_error(422, "invalid_field");
    }
    for near in ["60.17", "north,east", "91,24.9", "60.17,200"] {
        let path = format!("/api/v1/geocode?q=mannerheimintie&near={near}");
        let reply = app.get_authed(&path, &user.token).await;
        reply.assert_error(422, "invalid_location");
    }
    let at_limit = format!("/api/v1/geocode?q={}", "a".repeat(200));
    assert_eq!(app.get_authed(&at_limit, &user.token).await.status, 200);
}

#[actix_web::test]
async fn reverse_geocoding_names_the_address_at_a_point() {
    let app = helsinki_app(&[]).await;
    let user = app.signed_up("driver").await;
    let reply = app
        .get_authed(
            "/api/v1/geocode/reverse?lat=60.16868&lon=24.94190",
            &user.token,
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.body["label"], "Aleksanterinkatu 52, Helsinki");
    assert!((reply.body["lat"].as_f64().unwrap() - 60.1687).abs() < 0.0005);
    assert!((reply.body["lon"].as_f64().unwrap() - 24.9419).abs() < 0.0005);

    for query in [
        "lat=95&lon=24.9",
        "lat=60.17&lon=-200",
        "lat=north&lon=24.9",
        "lat=60.17",
        "",
    ] {
        let path = format!("/api/v1/geocode/reverse?{query}");
        app.get_authed(&path, &user.token)
            .await
            .assert_error(422, "invalid_location");
    }
    app.get_authed(
        "/api/v1/geocode/reverse?lat=61.4978&lon=23.7610",
        &user.token,
    )
    .await
    .assert_error(503, "maps_unavailable");
}

#[actix_web::test]
async fn streets_in_a_box_are_compact_polylines_with_attribution() {
    let app = helsinki_app(&[]).await;
    let user = app.signed_up("customer").await;
    let reply = app
        .get_authed(
            "/api/v1/map/streets?bbox=60.168,24.938,60.171,24.942",
            &user.token,
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(
        reply.body["attribution"],
        "© OpenStreetMap contributors, ODbL"
    );
    let streets = reply.body["streets"].as_array().unwrap();
    assert!(streets.len() > 20, "{}", streets.len());
    let mannerheimintie = streets
        .iter()
        .find(|s| s["name"] == "Mannerheimintie")
        .expect("Mannerheimintie crosses the box");
    assert_eq!(mannerheimintie["class"], "primary");
    for street in streets {
        let points = street["points"].as_array().unwrap();
        assert!(points.len() >= 2);
        for point in points {
            let [lat, lon] = [point[0].as_f64().unwrap(), point[1].as_f64().unwrap()];
            assert_eq!(point.as_array().unwrap().len(), 2);
            assert!(decimals(lat) <= 5 && decimals(lon) <= 5, "{lat},{lon}");
        }
    }

    let empty = app
        .get_authed("/api/v1/map/streets?bbox=10,10,10.1,10.1", &user.token)
        .await;
    assert_eq!(empty.status, 200);
    assert_eq!(empty.body["streets"], serde_json::json!([]));

    for bbox in [
        "",
        "60.168,24.938,60.171",
        "a,b,c,d",
        "60.171,24.938,60.168,24.942",
        "60,24,60.6,24.1",
        "60,24,60.1,24.51",
    ] {
        let path = format!("/api/v1/map/streets?bbox={bbox}");
        app.get_authed(&path, &user.token)
            .await
            .assert_error(422, "invalid_field");
    }
    app.get_authed("/api/v1/map/streets", &user.token)
        .await
        .assert_error(422, "invalid_field");
}

#[actix_web::test]
async fn every_maps_route_wants_a_signed_in_user() {
    let app = helsinki_app(&[]).await;
    for path in [
        "/api/v1/geocode?q=mannerheimintie",
        "/api/v1/geocode/reverse?lat=60.17&lon=24.94",
        "/api/v1/map/streets?bbox=60.168,24.938,60.171,24.942",
        "/api/v1/map",
    ] {
        let reply = app.get(path).await;
        assert_eq!(reply.status, 401, "{path}: {}", reply.text);
        let bad = app.get_authed(path, "not-a-token").await;
        assert_eq!(bad.status, 401, "{path}: {}", bad.text);
    }
}

#[actix_web::test]
async fn without_map_data_geocoding_and_streets_answer_503_maps_unavailable() {
    let app = spawn_app(Db::Sqlite).await;
    let user = app.signed_up("customer").await;
    for path in [
        "/api/v1/geocode?q=mannerheimintie",
        "/api/v1/geocode/reverse?lat=60.17&lon=24.94",
        "/api/v1/map/streets?bbox=60.168,24.938,60.171,24.942",
    ] {
        app.get_authed(path, &user.token)
            .await
            .assert_error(503, "maps_unavailable");
    }
    // Bad input is still bad input.
    app.get_authed("/api/v1/geocode?q=", &user.token)
        .await
        .assert_error(422, "invalid_field");

    let map = app.get_authed("/api/v1/map", &user.token).await;
    assert_eq!(map.status, 200, "{}", map.text);
    assert_eq!(
        map.body,
        serde_json::json!({
            "provider": "straight_line",
            "routing": "straight_line",
            "geocoding": false,
            "streets": false,
            "bounds": null,
            "tiles_url": null,
            "attribution": "© OpenStreetMap contributors, ODbL",
        })
    );
}

#[actix_web::test]
async fn the_map_description_gives_the_pages_bounds_tiles_and_attribution() {
    let tiles = "--map-tiles-url=https://tiles.example/{z}/{x}/{y}.png";
    let app = helsinki_app(&[tiles]).await;
    let user = app.signed_up("merchant").await;
    let map = app.get_authed("/api/v1/map", &user.token).await;
    assert_eq!(map.status, 200, "{}", map.text);
    assert_eq!(map.body["provider"], "straight_line");
    assert_eq!(map.body["routing"], "straight_line");
    assert_eq!(map.body["geocoding"], true);
    assert_eq!(map.body["streets"], true);
    assert_eq!(
        map.body["tiles_url"],
        "https://tiles.example/{z}/{x}/{y}.png"
    );
    assert_eq!(
        map.body["attribution"],
        "© OpenStreetMap contributors, ODbL"
    );
    let bounds = &map.body["bounds"];
    let [south, west, north, east] =
        ["south", "west", "north", "east"].map(|k| bounds[k].as_f64().unwrap());
    assert!(
        (60.16..60.165).contains(&south) && (60.175..60.18).contains(&north),
        "{bounds}"
    );
    assert!(
        (24.93..24.94).contains(&west) && (24.95..24.96).contains(&east),
        "{bounds}"
    );
}
