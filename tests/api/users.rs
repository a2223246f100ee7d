//! Sign-up, login, `/me`, and every way a token can be refused.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::json;

use crate::helpers::{Db, TestDb, on_both_backends, spawn_app, spawn_app_with, test_config};

const TEST_SECRET: &str = "integration-test-secret-0123456789abcdef";

on_both_backends! {
    async fn register_returns_201_with_the_user_and_no_password(app) {
        let reply = app.register("Ana@Example.com", "correct horse battery", "customer").await;
        assert_eq!(reply.status, 201, "{}", reply.text);
        assert_eq!(reply.body["email"], "ana@example.com");
        assert_eq!(reply.body["name"], "Test User");
        assert_eq!(reply.body["role"], "customer");
        assert!(reply.body["id"].as_str().unwrap().len() == 36);
        assert!(!reply.text.contains("password"), "{}", reply.text);
        assert!(!reply.text.contains("argon2"), "{}", reply.text);
    }

    async fn register_returns_409_email_taken_for_an_existing_email_in_any_case(app) {
        assert_eq!(app.register("bo@example.com", "correct horse battery", "driver").await.status, 201);
        let again = app.register("BO@example.com ", "another password", "merchant").await;
        again.assert_error(409, "email_taken");
    }

    async fn register_returns_422_naming_the_invalid_field(app) {
        let valid = json!({"email": "cy@example.com", "password": "correct horse", "name": "Cy", "role": "customer"});
        let cases = [
            ("email", json!("not-an-email")),
            ("email", json!("")),
            ("password", json!("short")),
            ("name", json!("   ")),
            ("role", json!("admin")),
            ("role", json!("boss")),
            ("role", json!(7)),
            ("email", json!(null)),
        ];
        for (field, value) in cases {
            let mut body = valid.clone();
            body[field] = value.clone();
            let reply = app.post_json("/api/v1/users", &body).await;
            reply.assert_error(422, "invalid_field");
            assert_eq!(reply.body["error"]["field"], field, "case {field}={value}: {}", reply.text);
            assert!(
                reply.body["error"]["message"].as_str().unwrap().contains(field),
                "case {field}={value}: {}", reply.text
            );
        }
        let mut missing = valid.clone();
        missing.as_object_mut().unwrap().remove("password");
        let reply = app.post_json("/api/v1/users", &missing).await;
        reply.assert_error(422, "invalid_field");
        assert_eq!(reply.body["error"]["field"], "password", "{}", reply.text);
    }

    async fn login_returns_a_token_that_me_accepts(app) {
        app.register("di@example.com", "correct horse battery", "merchant").await;
        let session = app.login("DI@example.com", "correct horse battery").await;
        assert_eq!(session.status, 200, "{}", session.text);
        assert_eq!(session.body["token_type"], "Bearer");
        assert_eq!(session.body["user"]["email"], "di@example.com");
        let expires_at = session.body["expires_at"].as_str().unwrap();
        let expires_at = chrono::DateTime::parse_from_rfc3339(expires_at).unwrap();
        let lifetime = expires_at.timestamp() - chrono::Utc::now().timestamp();
        assert!((3500..=3600).contains(&lifetime), "token lifetime {lifetime} s");

        let me = app.get_authed("/api/v1/me", session.body["token"].as_str().unwrap()).await;
        assert_eq!(me.status, 200, "{}", me.text);
        assert_eq!(me.body["id"], session.body["user"]["id"]);
        assert_eq!(me.body["role"], "merchant");
    }

    async fn login_answers_wrong_password_and_unknown_email_identically(app) {
        app.register("ed@example.com", "correct horse battery", "customer").await;
        let wrong_password = app.login("ed@example.com", "wrong horse battery").await;
        let unknown_email = app.login("nobody@example.com", "correct horse battery").await;
        let not_an_email = app.login("nobody", "correct horse battery").await;
        wrong_password.assert_error(401, "invalid_credentials");
        assert_eq!(wrong_password.text, unknown_email.text);
        assert_eq!(wrong_password.text, not_an_email.text);
    }

    async fn me_returns_401_without_a_usable_token(app) {
        let missing = app.get("/api/v1/me").await;
        missing.assert_error(401, "missing_token");
        assert!(missing.headers.get("www-authenticate").is_some());

        for header in ["Basic dXNlcjpwYXNz", "Bearer", "Bearer not.a.jwt", "Bearer a.b.c"] {
            let reply = crate::helpers::Reply::read(
                app.client.get(app.url("/api/v1/me")).header("authorization", header).send().await.unwrap(),
            )
            .await;
            reply.assert_error(401, "invalid_token");
        }
    }
}

fn claims(sub: &str, exp: i64) -> serde_json::Value {
    json!({ "sub": sub, "role": "customer", "exp": exp, "iat": exp - 3600 })
}

/// Runs the token-forgery cases against an application with a known secret.
async fn refuses_forged_expired_and_foreign_tokens(kind: Db) {
    let db = TestDb::create(kind).await;
    let mut config = test_config(&db);
    config.auth.jwt_secret = Some(mealkitz::config::Secret::new(TEST_SECRET));
    let app = spawn_app_with(db, config).await;
    let user = app.signed_up("customer").await;
    let now = chrono::Utc::now().timestamp();

    // Sanity: a token we sign ourselves with the right secret is accepted.
    let good = encode(
        &Header::new(Algorithm::HS256),
        &claims(&user.id, now + 600),
        &EncodingKey::from_secret(TEST_SECRET.as_bytes()),
    )
    .unwrap();
    assert_eq!(app.get_authed("/api/v1/me", &good).await.status, 200);

    let expired = encode(
        &Header::new(Algorithm::HS256),
        &claims(&user.id, now - 5),
        &EncodingKey::from_secret(TEST_SECRET.as_bytes()),
    )
    .unwrap();
    app.get_authed("/api/v1/me", &expired)
        .await
        .assert_error(401, "token_expired");

    let other_secret = encode(
        &Header::new(Algorithm::HS256),
        &claims(&user.id, now + 600),
        &EncodingKey::from_secret(b"some-other-secret-some-other-secret!!"),
    )
    .unwrap();
    app.get_authed("/api/v1/me", &other_secret)
        .await
        .assert_error(401, "invalid_token");

    let other_algorithm = encode(
        &Header::new(Algorithm::HS512),
        &claims(&user.id, now + 600),
        &EncodingKey::from_secret(TEST_SECRET.as_bytes()),
    )
    .unwrap();
    app.get_authed("/api/v1/me", &other_algorithm)
        .await
        .assert_error(401, "invalid_token");

    let unsigned = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(claims(&user.id, now + 600).to_string()),
    );
    app.get_authed("/api/v1/me", &unsigned)
        .await
        .assert_error(401, "invalid_token");

    // A real token whose signature was kept but whose claims were edited to another role.
    let real = &user.token;
    let mut parts: Vec<&str> = real.split('.').collect();
    let mut edited: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    edited["role"] = json!("admin");
    let edited = URL_SAFE_NO_PAD.encode(edited.to_string());
    parts[1] = &edited;
    app.get_authed("/api/v1/me", &parts.join("."))
        .await
        .assert_error(401, "invalid_token");
}

#[actix_web::test]
async fn postgres_refuses_alg_none_expired_and_foreign_tokens() {
    refuses_forged_expired_and_foreign_tokens(Db::Postgres).await;
}

#[actix_web::test]
async fn sqlite_refuses_alg_none_expired_and_foreign_tokens() {
    refuses_forged_expired_and_foreign_tokens(Db::Sqlite).await;
}

/// Registers, stops the application, starts a new one on the same database, and logs in again.
async fn users_and_tokens_survive_a_restart(kind: Db) {
    let app = spawn_app(kind).await;
    let user = app.signed_up("driver").await;
    let db = app.stop().await;

    let config = test_config(&db);
    let restarted = spawn_app_with(db, config).await;
    let session = restarted.login(&user.email, "correct horse battery").await;
    assert_eq!(session.status, 200, "{}", session.text);
    assert_eq!(session.body["user"]["id"], user.id.as_str());
    // The generated signing secret was kept in the database, so old tokens still work.
    let me = restarted.get_authed("/api/v1/me", &user.token).await;
    assert_eq!(me.status, 200, "{}", me.text);
}

#[actix_web::test]
async fn postgres_users_and_tokens_survive_a_restart() {
    users_and_tokens_survive_a_restart(Db::Postgres).await;
}

#[actix_web::test]
async fn sqlite_users_and_tokens_survive_a_restart() {
    users_and_tokens_survive_a_restart(Db::Sqlite).await;
}

async fn patch_me(
    app: &crate::helpers::TestApp,
    token: &str,
    body: &serde_json::Value,
) -> crate::helpers::Reply {
    app.request("PATCH", "/api/v1/me", Some(token), &[], Some(body))
        .await
}

on_both_backends! {
    async fn a_phone_number_and_whatsapp_consent_are_set_shown_and_removed_through_me(app) {
        let user = app.signed_up("customer").await;
        let me = app.get_authed("/api/v1/me", &user.token).await;
        assert_eq!(me.body["phone"], serde_json::Value::Null, "{}", me.text);
        assert_eq!(me.body["notify_whatsapp"], false, "{}", me.text);

        let set = patch_me(&app, &user.token, &json!({"phone": "+358 40-123 4567", "notify_whatsapp": true})).await;
        assert_eq!(set.status, 200, "{}", set.text);
        assert_eq!(set.body["phone"], "+358401234567");
        assert_eq!(set.body["notify_whatsapp"], true);
        assert_eq!(set.body["id"], user.id.as_str());
        let me = app.get_authed("/api/v1/me", &user.token).await;
        assert_eq!(me.body, set.body);
        let session = app.login(&user.email, "correct horse battery").await;
        assert_eq!(session.body["user"]["phone"], "+358401234567");

        // A field left out stays as it is.
        let off = patch_me(&app, &user.token, &json!({"notify_whatsapp": false})).await;
        assert_eq!(off.status, 200, "{}", off.text);
        assert_eq!((off.body["phone"].as_str(), off.body["notify_whatsapp"].as_bool()), (Some("+358401234567"), Some(false)));
        let on = patch_me(&app, &user.token, &json!({"notify_whatsapp": true})).await;
        assert_eq!(on.body["notify_whatsapp"], true, "{}", on.text);
        let unchanged = patch_me(&app, &user.token, &json!({})).await;
        assert_eq!(unchanged.body, on.body);

        // Removing the number withdraws the consent that needed it.
        let removed = patch_me(&app, &user.token, &json!({"phone": null})).await;
        assert_eq!(removed.status, 200, "{}", removed.text);
        assert_eq!(removed.body["phone"], serde_json::Value::Null);
        assert_eq!(removed.body["notify_whatsapp"], false);
        let me = app.get_authed("/api/v1/me", &user.token).await;
        assert_eq!(me.body, removed.body);
    }

    async fn me_refuses_an_invalid_phone_and_whatsapp_without_a_phone(app) {
        let user = app.signed_up("driver").await;
        for phone in ["0401234567", "+358", "+0401234567", "+358 40 123 4567 890 12", "+358x401234567", ""] {
            let refused = patch_me(&app, &user.token, &json!({"phone": phone})).await;
            refused.assert_error(422, "invalid_phone");
            assert!(refused.body["error"]["message"].as_str().unwrap().starts_with("phone: "), "{}", refused.text);
        }
        for body in [json!({"notify_whatsapp": true}), json!({"phone": null, "notify_whatsapp": true})] {
            let refused = patch_me(&app, &user.token, &body).await;
            refused.assert_error(422, "invalid_field");
            assert_eq!(refused.body["error"]["field"], "notify_whatsapp", "{}", refused.text);
        }
        for body in [json!({"phon": "+358401234567"}), json!({"phone": 358401234567_i64}), json!({"notify_whatsapp": "yes"})] {
            patch_me(&app, &user.token, &body).await.assert_error(422, "invalid_field");
        }
        // Nothing refused was kept.
        let me = app.get_authed("/api/v1/me", &user.token).await;
        assert_eq!((me.body["phone"].clone(), me.body["notify_whatsapp"].clone()), (serde_json::Value::Null, json!(false)));
        patch_me(&app, "not.a.token", &json!({})).await.assert_error(401, "invalid_token");
    }
}
