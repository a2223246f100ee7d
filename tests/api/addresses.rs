//! Requests that give an address and no coordinates: a merchant's location and a checkout's
//! dropoff are geocoded from the Helsinki extract; without map data that is a clear 503, and
//! half a pair of coordinates a clear 422.

use serde_json::{Value, json};

use crate::checkout::{checkout, new_key};
use crate::helpers::{Db, Session, TestApp, spawn_app};
use crate::maps_dispatch::helsinki_app;

/// The first geocoding result for `q`, as the API gives it.
async fn geocoded(app: &TestApp, user: &Session, q: &str) -> Value {
    let reply = app
        .get_authed(
            &format!("/api/v1/geocode?q={}", q.replace(' ', "%20")),
            &user.token,
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    reply.body["results"][0].clone()
}

/// A merchant created from its address alone, with a one-item menu: (owner, id, item id).
async fn kitchen_at(app: &TestApp, address: &str) -> (Session, Value, String) {
    let owner = app.signed_up("merchant").await;
    let created = app
        .post_authed(
            "/api/v1/merchants",
            &owner.token,
            &json!({"name": "Esplanadi Kitchen", "address": address}),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text);
    let id = created.body["id"].as_str().unwrap().to_owned();
    let menu = app
        .put_authed(
            &format!("/api/v1/merchants/{id}/menu"),
            &owner.token,
            &json!({"items": [{"name": "Salmon soup kit", "price_cents": 1450}]}),
        )
        .await;
    assert_eq!(menu.status, 200, "{}", menu.text);
    let item = menu.body["items"][0]["id"].as_str().unwrap().to_owned();
    (owner, created.body.clone(), item)
}

#[actix_web::test]
async fn a_merchant_and_a_dropoff_given_as_addresses_are_placed_where_geocoding_puts_them() {
    let app = helsinki_app(Db::Sqlite, None).await;
    let customer = app.signed_up("customer").await;
    let (_, merchant, item) = kitchen_at(&app, "Aleksanterinkatu 52").await;
    let kitchen = geocoded(&app, &customer, "Aleksanterinkatu 52").await;
    assert_eq!(merchant["location"]["lat"], kitchen["lat"], "{merchant}");
    assert_eq!(merchant["location"]["lon"], kitchen["lon"], "{merchant}");

    let body = json!({
        "merchant_id": merchant["id"],
        "items": [{"menu_item_id": item, "quantity": 1}],
        "dropoff": {"address": "Mannerheimintie 5"},
        "payment_method": "pm_card_visa",
    });
    let placed = checkout(&app, &customer.token, &new_key(), &body).await;
    assert_eq!(placed.status, 201, "{}", placed.text);
    // Looked up near the kitchen, as the checkout does.
    let near = format!(
        "Mannerheimintie 5&near={},{}",
        merchant["location"]["lat"], merchant["location"]["lon"]
    );
    let home = geocoded(&app, &customer, &near).await;
    assert_eq!(
        placed.body["dropoff"]["lat"], home["lat"],
        "{}",
        placed.text
    );
    assert_eq!(
        placed.body["dropoff"]["lon"], home["lon"],
        "{}",
        placed.text
    );
    assert_eq!(placed.body["dropoff_address"], "Mannerheimintie 5");
    assert_eq!(placed.body["pickup_address"], "Aleksanterinkatu 52");
}

#[actix_web::test]
async fn an_address_nothing_matches_or_half_a_pair_of_coordinates_is_refused_with_422() {
    let app = helsinki_app(Db::Sqlite, None).await;
    let customer = app.signed_up("customer").await;
    let owner = app.signed_up("merchant").await;
    let nowhere = app
        .post_authed(
            "/api/v1/merchants",
            &owner.token,
            &json!({"name": "Ghost Kitchen", "address": "Xyzzy Qwerty 99"}),
        )
        .await;
    nowhere.assert_error(422, "invalid_field");
    assert_eq!(nowhere.body["error"]["field"], "address");

    let (_, merchant, item) = kitchen_at(&app, "Aleksanterinkatu 52").await;
    let half = json!({
        "merchant_id": merchant["id"],
        "items": [{"menu_item_id": item, "quantity": 1}],
        "dropoff": {"lat": 60.17, "address": "Somewhere"},
        "payment_method": "pm_card_visa",
    });
    let refused = checkout(&app, &customer.token, &new_key(), &half).await;
    refused.assert_error(422, "invalid_field");
    assert_eq!(refused.body["error"]["field"], "dropoff");
}

#[actix_web::test]
async fn without_map_data_an_address_alone_is_503_maps_unavailable() {
    let app = spawn_app(Db::Sqlite).await;
    let owner = app.signed_up("merchant").await;
    let refused = app
        .post_authed(
            "/api/v1/merchants",
            &owner.token,
            &json!({"name": "Kitchen", "address": "1 Test Street"}),
        )
        .await;
    refused.assert_error(503, "maps_unavailable");
}
