//! Merchants and menus over REST, on both stores.

use serde_json::{Value, json};

use crate::helpers::at;
use crate::helpers::{Session, TestApp, on_both_backends};

/// A merchant with a menu, made through the API.
pub struct Shop {
    pub owner: Session,
    pub merchant_id: String,
    /// (menu item id, price in cents)
    pub items: Vec<(String, i64)>,
}

pub async fn open_shop(app: &TestApp, north_m: f64, east_m: f64) -> Shop {
    let owner = app.signed_up("merchant").await;
    let location = at(north_m, east_m);
    let created = app
        .post_authed(
            "/api/v1/merchants",
            &owner.token,
            &json!({"name": "Noodle Lab", "address": "1 Test Street", "location": location}),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text);
    let merchant_id = created.body["id"].as_str().unwrap().to_owned();
    let menu = app
        .put_authed(
            &format!("/api/v1/merchants/{merchant_id}/menu"),
            &owner.token,
            &json!({"items": [
                {"name": "Ramen kit", "price_cents": 1250},
                {"name": "Gyoza (6)", "price_cents": 599},
            ]}),
        )
        .await;
    assert_eq!(menu.status, 200, "{}", menu.text);
    let items = menu.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["id"].as_str().unwrap().to_owned(),
                i["price_cents"].as_i64().unwrap(),
            )
        })
        .collect();
    Shop {
        owner,
        merchant_id,
        items,
    }
}

on_both_backends! {
    async fn a_merchant_sets_a_menu_anyone_can_read(app) {
        let shop = open_shop(&app, -5_000.0, -5_000.0).await;
        let menu = app.get(&format!("/api/v1/merchants/{}/menu", shop.merchant_id)).await;
        assert_eq!(menu.status, 200, "{}", menu.text);
        let names: Vec<&str> = menu.body["items"].as_array().unwrap().iter().map(|i| i["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["Ramen kit", "Gyoza (6)"]);
        // Replacing the menu retires the old items.
        let replaced = app
            .put_authed(&format!("/api/v1/merchants/{}/menu", shop.merchant_id), &shop.owner.token,
                &json!({"items": [{"name": "Udon kit", "price_cents": 1100}]}))
            .await;
        assert_eq!(replaced.status, 200);
        let menu = app.get(&format!("/api/v1/merchants/{}/menu", shop.merchant_id)).await;
        assert_eq!(menu.body["items"].as_array().unwrap().len(), 1);
        assert_ne!(menu.body["items"][0]["id"], json!(shop.items[0].0));
    }

    async fn merchants_are_found_nearest_first(app) {
        let far = open_shop(&app, -5_000.0, -2_000.0).await;
        let near = open_shop(&app, -5_000.0, -4_500.0).await;
        let centre = at(-5_000.0, -5_000.0);
        let found = app.get(&format!("/api/v1/merchants?lat={}&lon={}&radius_m=4000", centre.lat, centre.lon)).await;
        assert_eq!(found.status, 200, "{}", found.text);
        let ids: Vec<&str> = found.body["merchants"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
        assert_eq!(ids, [near.merchant_id.as_str(), far.merchant_id.as_str()]);
        let distance = found.body["merchants"][0]["distance_m"].as_f64().unwrap();
        assert!((450.0..=550.0).contains(&distance), "{distance}");
        let tight = app.get(&format!("/api/v1/merchants?lat={}&lon={}&radius_m=1000", centre.lat, centre.lon)).await;
        assert_eq!(tight.body["merchants"].as_array().unwrap().len(), 1);
    }
}

#[actix_web::test]
async fn merchant_rules_are_enforced_with_clear_errors() {
    let app = crate::helpers::spawn_app(crate::helpers::Db::Sqlite).await;
    let owner = app.signed_up("merchant").await;
    let customer = app.signed_up("customer").await;
    let inside = at(1_000.0, 1_000.0);
    let body =
        |location: Value| json!({"name": "Kitchen", "address": "2 Road", "location": location});

    let not_merchant = app
        .post_authed("/api/v1/merchants", &customer.token, &body(json!(inside)))
        .await;
    not_merchant.assert_error(403, "forbidden");
    let outside = app
        .post_authed(
            "/api/v1/merchants",
            &owner.token,
            &body(json!({"lat": 41.5, "lon": -73.98})),
        )
        .await;
    outside.assert_error(422, "outside_service_area");
    let invalid = app
        .post_authed(
            "/api/v1/merchants",
            &owner.token,
            &body(json!({"lat": 95.0, "lon": 0.0})),
        )
        .await;
    invalid.assert_error(422, "invalid_location");
    let blank = app
        .post_authed(
            "/api/v1/merchants",
            &owner.token,
            &json!({"name": " ", "address": "x", "location": inside}),
        )
        .await;
    blank.assert_error(422, "invalid_field");
    assert_eq!(blank.body["error"]["field"], "name");

    let shop = open_shop(&app, 1_000.0, 1_000.0).await;
    let path = format!("/api/v1/merchants/{}/menu", shop.merchant_id);
    let stranger = app
        .put_authed(&path, &owner.token, &json!({"items": []}))
        .await;
    stranger.assert_error(403, "forbidden");
    let negative = app
        .put_authed(
            &path,
            &shop.owner.token,
            &json!({"items": [{"name": "x", "price_cents": -1}]}),
        )
        .await;
    negative.assert_error(422, "invalid_field");
    assert_eq!(negative.body["error"]["field"], "items[0].price_cents");
    app.get(&format!("/api/v1/merchants/{}/menu", uuid::Uuid::now_v7()))
        .await
        .assert_error(404, "not_found");
    app.get("/api/v1/merchants/not-a-uuid")
        .await
        .assert_error(404, "not_found");
    app.get("/api/v1/merchants?lat=x&lon=1")
        .await
        .assert_error(400, "invalid_query");
    app.get("/api/v1/merchants?lat=40.7&lon=-74&radius_m=100000")
        .await
        .assert_error(422, "invalid_field");

    let closed = app
        .post_authed(
            &format!("/api/v1/merchants/{}/close", shop.merchant_id),
            &shop.owner.token,
            &json!({}),
        )
        .await;
    assert_eq!(closed.status, 200, "{}", closed.text);
    assert_eq!(closed.body["is_open"], false);
    let reopened = app
        .post_authed(
            &format!("/api/v1/merchants/{}/open", shop.merchant_id),
            &shop.owner.token,
            &json!({}),
        )
        .await;
    assert_eq!(reopened.body["is_open"], true);
    let other = app
        .post_authed(
            &format!("/api/v1/merchants/{}/close", shop.merchant_id),
            &owner.token,
            &json!({}),
        )
        .await;
    other.assert_error(403, "forbidden");
}
