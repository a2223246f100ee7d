//! OAuth2 client credentials for integrations: admins register clients; `POST /oauth/token`
//! answers as RFC 6749 §4.4 and §5.2 say; its EdDSA tokens verify against the published JWKS
//! with an independent JWT library (jwt-compact over ed25519-compact); a rotated key verifies
//! until its tokens expire and then leaves the JWKS; a revoked client's tokens fail on every
//! replica within a second; the server's metadata (RFC 8414).

use std::time::{Duration, Instant};

use base64::Engine;
use jwt_compact::alg::Ed25519;
use jwt_compact::jwk::JsonWebKey;
use jwt_compact::{Algorithm, AlgorithmExt, TimeOptions, UntrustedToken};
use mealkitz::config::Config;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::checkout::admin;
use crate::helpers::{Db, Reply, TestApp, TestDb, each_backend, spawn_app_with, test_config};

/// The public URL the test applications run under (the tokens' issuer).
const PUBLIC_URL: &str = "https://dispatch.example.test";
/// A short token lifetime, so expiry and a retired key's grace can be waited out.
const SHORT_TTL_SECS: u64 = 3;

fn config(db: &TestDb, tune: impl FnOnce(&mut Config)) -> Config {
    let mut config = test_config(db);
    config.notify.public_url = PUBLIC_URL.to_owned();
    tune(&mut config);
    config
}

async fn app_with(kind: Db, tune: impl FnOnce(&mut Config)) -> TestApp {
    let db = TestDb::create(kind).await;
    let config = config(&db, tune);
    spawn_app_with(db, config).await
}

/// A registered client: its id and secret.
struct Client {
    id: String,
    secret: String,
    body: Value,
}

async fn register_client(app: &TestApp, admin: &str, body: Value) -> Client {
    let created = app.post_authed("/api/v1/oauth-clients", admin, &body).await;
    assert_eq!(created.status, 201, "{}", created.text);
    Client {
        id: created.body["client_id"].as_str().unwrap().to_owned(),
        secret: created.body["client_secret"].as_str().unwrap().to_owned(),
        body: created.body,
    }
}

/// `POST /oauth/token` with a raw form body, optional Basic credentials and extra headers.
/// Revokes the client `client_id` as `admin` (asserting 204).
async fn revoke_client(app: &TestApp, admin: &str, client_id: &str) {
    let path = format!("/api/v1/oauth-clients/{client_id}");
    app.request("DELETE", &path, Some(admin), &[], None)
        .await
        .assert_status(204);
}

async fn token_request(
    address: &str,
    basic: Option<(&str, &str)>,
    content_type: &str,
    body: &str,
    headers: &[(&str, &str)],
) -> Reply {
    let client = reqwest::Client::new();
    let mut request = client
        .post(format!("{address}/oauth/token"))
        .header("content-type", content_type)
        .body(body.to_owned());
    if let Some((id, secret)) = basic {
        request = request.basic_auth(id, Some(secret));
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    Reply::read(request.send().await.expect("token request sent")).await
}

const FORM: &str = "application/x-www-form-urlencoded";

/// A token by Basic authentication, asserting success.
async fn token_for(address: &str, client: &Client, scope: Option<&str>) -> Value {
    let body = match scope {
        Some(scope) => format!(
            "grant_type=client_credentials&scope={}",
            scope.replace(' ', "+")
        ),
        None => "grant_type=client_credentials".to_owned(),
    };
    let reply = token_request(
        address,
        Some((&client.id, &client.secret)),
        FORM,
        &body,
        &[],
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    reply.body
}

fn header<'a>(reply: &'a Reply, name: &str) -> Option<&'a str> {
    reply.headers.get(name).and_then(|v| v.to_str().ok())
}

/// The claims this service puts in an access token, read by the independent library.
#[derive(Debug, Deserialize)]
struct Claims {
    iss: String,
    aud: String,
    sub: String,
    client_id: String,
    scope: String,
    role: String,
    merchant_id: Option<String>,
    jti: String,
}

/// Verifies `token` with jwt-compact against the JWKS `app` publishes: the header's kid names a
/// published key, alg EdDSA, typ at+jwt, signature and expiry.
async fn verify_with_jwks(address: &str, token: &str) -> (String, jwt_compact::Claims<Claims>) {
    let jwks: Value = reqwest::get(format!("{address}/.well-known/jwks.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let untrusted = UntrustedToken::new(token).expect("a JWT");
    assert_eq!(untrusted.algorithm(), "EdDSA");
    assert_eq!(untrusted.header().token_type.as_deref(), Some("at+jwt"));
    let kid = untrusted.header().key_id.clone().expect("a kid");
    let jwk = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == kid.as_str())
        .unwrap_or_else(|| panic!("kid {kid} is not in the JWKS {jwks}"));
    assert_eq!(
        (jwk["kty"].as_str(), jwk["crv"].as_str()),
        (Some("OKP"), Some("Ed25519"))
    );
    assert_eq!(
        (jwk["alg"].as_str(), jwk["use"].as_str()),
        (Some("EdDSA"), Some("sig"))
    );
    let parsed: JsonWebKey<'_> = serde_json::from_value(jwk.clone()).expect("a JWK");
    let key = <Ed25519 as Algorithm>::VerifyingKey::try_from(&parsed).expect("an Ed25519 JWK");
    // The kid is the RFC 7638 thumbprint, computed by the library too.
    let thumbprint = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(parsed.thumbprint::<sha2::Sha256>());
    assert_eq!(thumbprint, kid);
    let token = Ed25519
        .validator::<Claims>(&key)
        .validate(&untrusted)
        .expect("the signature verifies with the published key");
    token
        .claims()
        .validate_expiration(&TimeOptions::default())
        .expect("not expired");
    (kid, token.into_parts().1)
}

async fn client_credentials_give_a_token_that_verifies_against_the_published_jwks(kind: Db) {
    let app = app_with(kind, |_| {}).await;
    let admin = admin(&app).await;
    let client = register_client(
        &app,
        &admin,
        json!({"name": "Partner", "scopes": ["orders:read", "profile:read"], "merchant_id": null}),
    )
    .await;
    assert!(client.id.starts_with("mkc_"), "{}", client.id);
    assert!(client.secret.starts_with("mkcs_"), "{}", client.secret);
    assert_eq!(client.body["name"], "Partner");
    assert_eq!(
        client.body["scopes"],
        json!(["profile:read", "orders:read"])
    );
    assert_eq!(client.body["merchant_id"], Value::Null);
    assert!(client.body["created_at"].is_string());

    // Basic authentication.
    let reply = token_request(
        &app.address,
        Some((&client.id, &client.secret)),
        FORM,
        "grant_type=client_credentials",
        &[],
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(header(&reply, "cache-control"), Some("no-store"));
    assert_eq!(header(&reply, "pragma"), Some("no-cache"));
    assert_eq!(reply.body["token_type"], "Bearer");
    assert_eq!(reply.body["expires_in"], 3600);
    assert_eq!(reply.body["scope"], "profile:read orders:read");
    let token = reply.body["access_token"].as_str().unwrap();

    let jwks = app.get("/.well-known/jwks.json").await;
    assert_eq!(jwks.status, 200, "{}", jwks.text);
    assert!(
        header(&jwks, "cache-control").is_some_and(|v| v.starts_with("public, max-age=")),
        "{:?}",
        jwks.headers
    );
    let (_, claims) = verify_with_jwks(&app.address, token).await;
    let exp = claims.expiration.unwrap().timestamp();
    let iat = claims.issued_at.unwrap().timestamp();
    assert_eq!(exp - iat, 3600);
    let claims = claims.custom;
    assert_eq!(claims.iss, PUBLIC_URL);
    assert_eq!(claims.aud, format!("{PUBLIC_URL}/api/v1"));
    assert_eq!(claims.sub, client.body["user_id"].as_str().unwrap());
    assert_eq!(claims.client_id, client.id);
    assert_eq!(claims.scope, "profile:read orders:read");
    assert_eq!(claims.role, "customer");
    assert_eq!(claims.merchant_id, None);
    assert!(!claims.jti.is_empty());

    // The token acts for the client's service account.
    let me = app.get_authed("/api/v1/me", token).await;
    assert_eq!(me.status, 200, "{}", me.text);
    assert_eq!(me.body["id"].as_str(), Some(claims.sub.as_str()));
    assert_eq!(me.body["name"], "Partner");
    assert_eq!(me.body["role"], "customer");

    // client_secret_post works too, and each token is its own.
    let body = format!(
        "grant_type=client_credentials&client_id={}&client_secret={}",
        client.id, client.secret
    );
    let posted = token_request(&app.address, None, FORM, &body, &[]).await;
    assert_eq!(posted.status, 200, "{}", posted.text);
    let second = posted.body["access_token"].as_str().unwrap();
    assert_ne!(second, token);
    let (_, second_claims) = verify_with_jwks(&app.address, second).await;
    assert_ne!(second_claims.custom.jti, claims.jti);
}

async fn the_scope_parameter_narrows_the_token_to_the_scopes_asked(kind: Db) {
    let app = app_with(kind, |_| {}).await;
    let admin = admin(&app).await;
    let client = register_client(
        &app,
        &admin,
        json!({"name": "Reader", "scopes": ["orders:read", "profile:read", "maps:read"]}),
    )
    .await;
    let narrowed = token_for(&app.address, &client, Some("maps:read profile:read")).await;
    assert_eq!(narrowed["scope"], "profile:read maps:read");
    let token = narrowed["access_token"].as_str().unwrap();
    let (_, claims) = verify_with_jwks(&app.address, token).await;
    assert_eq!(claims.custom.scope, "profile:read maps:read");
    assert_eq!(app.get_authed("/api/v1/me", token).await.status, 200);
}

/// Asserts a §5.2 error: status, `error`, a description, no-store, and on 401 the Basic challenge.
#[track_caller]
fn assert_oauth_error(case: &str, reply: &Reply, status: u16, error: &str) {
    assert_eq!(reply.status, status, "{case}: {}", reply.text);
    assert_eq!(reply.body["error"], error, "{case}: {}", reply.text);
    assert!(
        reply.body["error_description"]
            .as_str()
            .is_some_and(|d| !d.is_empty()),
        "{case}: {}",
        reply.text
    );
    assert_eq!(header(reply, "cache-control"), Some("no-store"), "{case}");
    assert_eq!(header(reply, "pragma"), Some("no-cache"), "{case}");
    assert!(
        header(reply, "content-type").is_some_and(|v| v.starts_with("application/json")),
        "{case}"
    );
    let challenge = header(reply, "www-authenticate");
    if status == 401 {
        assert_eq!(challenge, Some("Basic realm=\"mealkitz\""), "{case}");
    } else {
        assert_eq!(challenge, None, "{case}");
    }
}

/// A token request and the §5.2 answer it gets: (what it is, Basic credentials, content type,
/// body, more headers, status, `error`).
type Case<'a> = (
    &'a str,
    Option<(&'a str, &'a str)>,
    &'a str,
    String,
    &'a [(&'a str, &'a str)],
    u16,
    &'a str,
);

async fn every_section_5_2_error_is_answered_as_the_rfc_says(kind: Db) {
    let app = app_with(kind, |_| {}).await;
    let admin = admin(&app).await;
    let client = register_client(
        &app,
        &admin,
        json!({"name": "P", "scopes": ["orders:read"]}),
    )
    .await;
    let revoked = register_client(
        &app,
        &admin,
        json!({"name": "R", "scopes": ["orders:read"]}),
    )
    .await;
    revoke_client(&app, &admin, &revoked.id).await;

    let good = Some((client.id.as_str(), client.secret.as_str()));
    let grant = "grant_type=client_credentials";
    let post_auth =
        |id: &str, secret: &str| format!("{grant}&client_id={id}&client_secret={secret}");
    let cases: Vec<Case<'_>> = vec![
        (
            "no client authentication",
            None,
            FORM,
            grant.into(),
            &[],
            401,
            "invalid_client",
        ),
        (
            "client_id without a secret",
            None,
            FORM,
            format!("{grant}&client_id={}", client.id),
            &[],
            401,
            "invalid_client",
        ),
        (
            "unknown client",
            Some(("mkc_00000000000000000000", "mkcs_nope")),
            FORM,
            grant.into(),
            &[],
            401,
            "invalid_client",
        ),
        (
            "wrong secret by Basic",
            Some((client.id.as_str(), "mkcs_wrong")),
            FORM,
            grant.into(),
            &[],
            401,
            "invalid_client",
        ),
        (
            "wrong secret by post",
            None,
            FORM,
            post_auth(&client.id, "mkcs_wrong"),
            &[],
            401,
            "invalid_client",
        ),
        (
            "revoked client",
            Some((revoked.id.as_str(), revoked.secret.as_str())),
            FORM,
            grant.into(),
            &[],
            401,
            "invalid_client",
        ),
        (
            "a bearer scheme",
            None,
            FORM,
            grant.into(),
            &[("authorization", "Bearer abc")],
            401,
            "invalid_client",
        ),
        (
            "grant_type missing",
            good,
            FORM,
            "scope=orders:read".into(),
            &[],
            400,
            "invalid_request",
        ),
        (
            "grant_type repeated",
            good,
            FORM,
            format!("{grant}&{grant}"),
            &[],
            400,
            "invalid_request",
        ),
        (
            "scope repeated",
            good,
            FORM,
            format!("{grant}&scope=orders:read&scope=orders:read"),
            &[],
            400,
            "invalid_request",
        ),
        (
            "JSON instead of a form",
            good,
            "application/json",
            r#"{"grant_type":"client_credentials"}"#.into(),
            &[],
            400,
            "invalid_request",
        ),
        (
            "malformed form",
            good,
            FORM,
            "grant_type=client_credentials&scope=%zz".into(),
            &[],
            400,
            "invalid_request",
        ),
        (
            "Basic and a secret in the form",
            good,
            FORM,
            post_auth(&client.id, &client.secret),
            &[],
            400,
            "invalid_request",
        ),
        (
            "a secret without client_id",
            None,
            FORM,
            format!("{grant}&client_secret={}", client.secret),
            &[],
            400,
            "invalid_request",
        ),
        (
            "grant_type password",
            good,
            FORM,
            "grant_type=password&username=a&password=b".into(),
            &[],
            400,
            "unsupported_grant_type",
        ),
        (
            "grant_type authorization_code",
            good,
            FORM,
            "grant_type=authorization_code&code=x".into(),
            &[],
            400,
            "unsupported_grant_type",
        ),
        (
            "a scope the client lacks",
            good,
            FORM,
            format!("{grant}&scope=orders:read+orders:write"),
            &[],
            400,
            "invalid_scope",
        ),
        (
            "an unknown scope",
            good,
            FORM,
            format!("{grant}&scope=orders:delete"),
            &[],
            400,
            "invalid_scope",
        ),
    ];
    for (case, basic, content_type, body, headers, status, error) in cases {
        let reply = token_request(&app.address, basic, content_type, &body, headers).await;
        assert_oauth_error(case, &reply, status, error);
    }
    // And the good request still works after all that.
    token_for(&app.address, &client, None).await;
}

async fn a_client_limited_to_a_merchant_acts_for_its_owner(kind: Db) {
    let app = app_with(kind, |_| {}).await;
    let admin = admin(&app).await;
    let shop = crate::merchants::open_shop(&app, 0.0, 0.0).await;
    let for_customer = app
        .post_authed(
            "/api/v1/oauth-clients",
            &admin,
            &json!({"name": "POS", "scopes": ["menu:write"]}),
        )
        .await;
    for_customer.assert_error(422, "invalid_scope");
    let client = register_client(
        &app,
        &admin,
        json!({"name": "POS", "scopes": ["orders:read", "menu:write"], "merchant_id": shop.merchant_id}),
    )
    .await;
    assert_eq!(client.body["merchant_id"], shop.merchant_id.as_str());
    assert_eq!(client.body["user_id"], shop.owner.id.as_str());
    let token = token_for(&app.address, &client, None).await;
    let (_, claims) = verify_with_jwks(&app.address, token["access_token"].as_str().unwrap()).await;
    assert_eq!(claims.custom.sub, shop.owner.id);
    assert_eq!(claims.custom.role, "merchant");
    assert_eq!(
        claims.custom.merchant_id.as_deref(),
        Some(shop.merchant_id.as_str())
    );
}

/// Replicas starting at once on an empty table may each add a first key; once each has
/// loaded again they sign with the same one, and only that one may sign.
async fn replicas_racing_at_first_start_end_up_with_one_signing_key(kind: Db) {
    use mealkitz::api::auth::signing::SigningKeys;
    let db = TestDb::create(kind).await;
    let store = crate::helpers::migrated_store(&db).await;
    let settings = mealkitz::config::AuthConfig::default();
    let replicas: Vec<SigningKeys> = (0..4).map(|_| SigningKeys::new(&settings)).collect();
    let loads = futures_util::future::join_all(replicas.iter().map(|r| r.load(&store))).await;
    assert!(loads.iter().all(Result::is_ok), "{loads:?}");
    for replica in &replicas {
        replica.load(&store).await.unwrap();
    }
    let kids: Vec<Option<String>> = replicas.iter().map(SigningKeys::signing_kid).collect();
    assert!(kids[0].is_some());
    assert!(kids.iter().all(|kid| *kid == kids[0]), "{kids:?}");
    let signing: Vec<String> = store
        .signing_keys()
        .await
        .unwrap()
        .into_iter()
        .filter(|k| k.retired_at.is_none())
        .map(|k| k.kid)
        .collect();
    assert_eq!(signing, vec![kids[0].clone().unwrap()]);
    store.close().await;
}

each_backend! {
    racing_first_start => replicas_racing_at_first_start_end_up_with_one_signing_key;
    client_credentials_give_a_verifiable_token => client_credentials_give_a_token_that_verifies_against_the_published_jwks;
    scope_narrowing => the_scope_parameter_narrows_the_token_to_the_scopes_asked;
    section_5_2_errors => every_section_5_2_error_is_answered_as_the_rfc_says;
    merchant_limited_client => a_client_limited_to_a_merchant_acts_for_its_owner;
}

#[actix_web::test]
async fn creating_a_client_refuses_scopes_it_cannot_hold_and_lists_without_secrets() {
    let app = app_with(Db::Sqlite, |_| {}).await;
    let admin = admin(&app).await;
    for (case, scopes) in [
        ("empty", json!([])),
        ("unknown", json!(["orders:delete"])),
        ("not for a service account", json!(["admin"])),
    ] {
        let reply = app
            .post_authed(
                "/api/v1/oauth-clients",
                &admin,
                &json!({"name": "X", "scopes": scopes}),
            )
            .await;
        assert_eq!(reply.status, 422, "{case}: {}", reply.text);
        assert_eq!(reply.error_code(), "invalid_scope", "{case}");
    }
    app.post_authed(
        "/api/v1/oauth-clients",
        &admin,
        &json!({"name": " ", "scopes": ["orders:read"]}),
    )
    .await
    .assert_error(422, "invalid_field");
    let client = register_client(
        &app,
        &admin,
        json!({"name": "Listed", "scopes": ["orders:read"]}),
    )
    .await;
    let listed = app.get_authed("/api/v1/oauth-clients", &admin).await;
    assert_eq!(listed.status, 200, "{}", listed.text);
    let clients = listed.body["clients"].as_array().unwrap();
    assert_eq!(clients.len(), 1);
    assert_eq!(clients[0]["client_id"], client.id.as_str());
    assert_eq!(clients[0]["revoked_at"], Value::Null);
    assert!(!listed.text.contains(&client.secret), "{}", listed.text);
    assert!(!listed.text.contains("secret"), "{}", listed.text);
    app.request(
        "DELETE",
        "/api/v1/oauth-clients/mkc_nope",
        Some(&admin),
        &[],
        None,
    )
    .await
    .assert_error(404, "oauth_client_not_found");

    let store = crate::ws::store_of(&app).await;
    let actions: Vec<String> = store
        .audit_page(None, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|e| format!("{} {}", e.action, e.target.unwrap_or_default()))
        .collect();
    assert_eq!(actions, vec![format!("oauth_client.created {}", client.id)]);
}

#[actix_web::test]
async fn only_admins_manage_clients_and_signing_keys() {
    let app = app_with(Db::Sqlite, |_| {}).await;
    let customer = app.signed_up("customer").await;
    let merchant = app.signed_up("merchant").await;
    let body = json!({"name": "X", "scopes": ["orders:read"]});
    for token in [&customer.token, &merchant.token] {
        app.post_authed("/api/v1/oauth-clients", token, &body)
            .await
            .assert_error(403, "forbidden");
        app.get_authed("/api/v1/oauth-clients", token)
            .await
            .assert_error(403, "forbidden");
        app.request(
            "DELETE",
            "/api/v1/oauth-clients/mkc_x",
            Some(token),
            &[],
            None,
        )
        .await
        .assert_error(403, "forbidden");
        app.post_authed("/api/v1/signing-keys/rotate", token, &json!({}))
            .await
            .assert_error(403, "forbidden");
    }
    app.post_json("/api/v1/oauth-clients", &body)
        .await
        .assert_error(401, "missing_token");
}

#[actix_web::test]
async fn a_rotated_signing_key_keeps_old_tokens_valid_until_they_expire_then_leaves_the_jwks() {
    let app = app_with(Db::Postgres, |c| {
        c.auth.access_token_ttl_secs = SHORT_TTL_SECS
    })
    .await;
    let admin = admin(&app).await;
    let client = register_client(
        &app,
        &admin,
        json!({"name": "P", "scopes": ["profile:read"]}),
    )
    .await;
    let old = token_for(&app.address, &client, None).await;
    let old = old["access_token"].as_str().unwrap().to_owned();
    let (old_kid, _) = verify_with_jwks(&app.address, &old).await;

    let rotated = app
        .post_authed("/api/v1/signing-keys/rotate", &admin, &json!({}))
        .await;
    assert_eq!(rotated.status, 201, "{}", rotated.text);
    let new_kid = rotated.body["kid"].as_str().unwrap().to_owned();
    assert_ne!(new_kid, old_kid);
    let kids = |jwks: &Reply| -> Vec<String> {
        jwks.body["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap().to_owned())
            .collect()
    };
    let jwks = app.get("/.well-known/jwks.json").await;
    assert_eq!(kids(&jwks), vec![new_kid.clone(), old_kid.clone()]);
    // The old token still works and still verifies; new tokens carry the new kid.
    assert_eq!(app.get_authed("/api/v1/me", &old).await.status, 200);
    verify_with_jwks(&app.address, &old).await;
    let new = token_for(&app.address, &client, None).await;
    let new = new["access_token"].as_str().unwrap().to_owned();
    assert_eq!(verify_with_jwks(&app.address, &new).await.0, new_kid);

    // Past its expiry the old token is refused as expired, not as forged.
    let deadline = Instant::now() + Duration::from_secs(SHORT_TTL_SECS + 3);
    loop {
        let reply = app.get_authed("/api/v1/me", &old).await;
        if reply.status == 401 {
            reply.assert_error(401, "token_expired");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the old token outlived its expiry"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Then the old key leaves the JWKS (its grace: a token's lifetime and a reload interval).
    let deadline = Instant::now() + Duration::from_secs(2 * SHORT_TTL_SECS + 5);
    loop {
        let jwks = app.get("/.well-known/jwks.json").await;
        if kids(&jwks) == vec![new_kid.clone()] {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the old key is still published: {}",
            jwks.text
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let store = crate::ws::store_of(&app).await;
    let entries = store.audit_page(None, 10).await.unwrap();
    assert!(
        entries
            .iter()
            .any(|e| e.action == "signing_key.rotated" && e.target.as_deref() == Some(&new_kid)),
        "{entries:?}"
    );
}

#[actix_web::test]
async fn a_signing_key_older_than_its_rotation_age_is_replaced_by_itself() {
    let app = app_with(Db::Sqlite, |c| {
        c.auth.access_token_ttl_secs = SHORT_TTL_SECS;
        c.auth.signing_key_rotate_secs = 2;
    })
    .await;
    let first = app.get("/.well-known/jwks.json").await.body["keys"][0]["kid"].clone();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let keys = app.get("/.well-known/jwks.json").await.body["keys"].clone();
        if keys[0]["kid"] != first {
            break;
        }
        assert!(Instant::now() < deadline, "no rotation after 10 s: {keys}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A second replica on `app`'s database, with `app`'s settings; its address once its keys
/// are loaded.
async fn second_replica(
    app: &TestApp,
    tune: impl FnOnce(&mut Config),
) -> (String, mealkitz::startup::StopHandle) {
    let mut config = config(&app.db, tune);
    config.dispatch.node_id = "second".into();
    let second = crate::helpers::start_without_db(config).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while reqwest::get(format!("{}/.well-known/jwks.json", second.address))
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
        != 200
    {
        assert!(
            Instant::now() < deadline,
            "second replica has no keys after 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (second.address, second.handle)
}

#[actix_web::test]
async fn two_replicas_agree_on_the_keys_and_a_revoked_clients_token_fails_on_both_within_a_second()
{
    let app = app_with(Db::Postgres, |_| {}).await;
    let (second, handle) = second_replica(&app, |_| {}).await;
    let jwks = |address: String| async move {
        reqwest::get(format!("{address}/.well-known/jwks.json"))
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
    };
    assert_eq!(jwks(app.address.clone()).await, jwks(second.clone()).await);

    let admin = admin(&app).await;
    let client = register_client(
        &app,
        &admin,
        json!({"name": "P", "scopes": ["profile:read"]}),
    )
    .await;
    let from_first = token_for(&app.address, &client, None).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let from_second = token_for(&second, &client, None).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let me = |address: String, token: String| async move {
        Reply::read(
            reqwest::Client::new()
                .get(format!("{address}/api/v1/me"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap(),
        )
        .await
    };
    for token in [&from_first, &from_second] {
        assert_eq!(me(app.address.clone(), token.clone()).await.status, 200);
        assert_eq!(me(second.clone(), token.clone()).await.status, 200);
    }

    revoke_client(&app, &admin, &client.id).await;
    let revoked_at = Instant::now();
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    assert!(revoked_at.elapsed() < Duration::from_millis(1_500));
    for address in [&app.address, &second] {
        for token in [&from_first, &from_second] {
            me(address.clone(), token.clone())
                .await
                .assert_error(401, "invalid_token");
        }
        let refused = token_request(
            address,
            Some((&client.id, &client.secret)),
            FORM,
            "grant_type=client_credentials",
            &[],
        )
        .await;
        assert_oauth_error("revoked, on each replica", &refused, 401, "invalid_client");
    }
    handle.stop(false).await;
}

#[actix_web::test]
async fn a_key_another_replica_rotated_in_verifies_here_at_once() {
    let app = app_with(Db::Postgres, |_| {}).await;
    let (second, handle) = second_replica(&app, |_| {}).await;
    let admin = admin(&app).await;
    let client = register_client(
        &app,
        &admin,
        json!({"name": "P", "scopes": ["profile:read"]}),
    )
    .await;
    // The second replica rotates; the first has not reloaded yet (30 s apart) and learns of
    // the new kid when a token names it.
    let rotated = Reply::read(
        reqwest::Client::new()
            .post(format!("{second}/api/v1/signing-keys/rotate"))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(rotated.status, 201, "{}", rotated.text);
    let token = token_for(&second, &client, None).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(app.get_authed("/api/v1/me", &token).await.status, 200);
    handle.stop(false).await;
}

#[actix_web::test]
async fn repeated_failed_client_authentications_are_refused_with_429_for_a_while() {
    let app = app_with(Db::Sqlite, |_| {}).await;
    let admin = admin(&app).await;
    let client = register_client(
        &app,
        &admin,
        json!({"name": "P", "scopes": ["orders:read"]}),
    )
    .await;
    for _ in 0..10 {
        let reply = token_request(
            &app.address,
            Some((&client.id, "mkcs_wrong")),
            FORM,
            "grant_type=client_credentials",
            &[],
        )
        .await;
        assert_oauth_error("a wrong secret", &reply, 401, "invalid_client");
    }
    // Even the right secret waits now: a guesser cannot tell a hit.
    let reply = token_request(
        &app.address,
        Some((&client.id, &client.secret)),
        FORM,
        "grant_type=client_credentials",
        &[],
    )
    .await;
    assert_oauth_error("over the limit", &reply, 429, "invalid_request");
    assert!(header(&reply, "retry-after").is_some_and(|s| s.parse::<u64>().is_ok_and(|s| s >= 1)));
}

#[actix_web::test]
async fn the_metadata_names_the_endpoints_and_every_scope() {
    let app = app_with(Db::Sqlite, |_| {}).await;
    let reply = app.get("/.well-known/oauth-authorization-server").await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let body = &reply.body;
    assert_eq!(body["issuer"], PUBLIC_URL);
    assert_eq!(body["token_endpoint"], format!("{PUBLIC_URL}/oauth/token"));
    assert_eq!(
        body["jwks_uri"],
        format!("{PUBLIC_URL}/.well-known/jwks.json")
    );
    assert_eq!(body["grant_types_supported"], json!(["client_credentials"]));
    assert_eq!(
        body["token_endpoint_auth_methods_supported"],
        json!(["client_secret_basic", "client_secret_post"])
    );
    let scopes: Vec<&str> = mealkitz::domain::Scope::ALL
        .iter()
        .map(|s| s.as_str())
        .collect();
    assert_eq!(body["scopes_supported"], json!(scopes));
    assert_eq!(body["response_types_supported"], json!([]));
    assert!(
        body["service_documentation"]
            .as_str()
            .is_some_and(|u| u.starts_with(PUBLIC_URL))
    );
}

#[actix_web::test]
async fn keys_from_a_file_sign_in_order_and_are_not_rotated() {
    use ed25519_dalek::pkcs8::EncodePrivateKey;
    let pem = |seed: u8| {
        let der = ed25519_dalek::SigningKey::from_bytes(&[seed; 32])
            .to_pkcs8_der()
            .unwrap();
        let body = base64::engine::general_purpose::STANDARD.encode(der.as_bytes());
        format!("-----BEGIN PRIVATE KEY-----\n{body}\n-----END PRIVATE KEY-----\n")
    };
    let dir = std::env::temp_dir().join(format!("mealkitz-keys-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("keys.pem");
    std::fs::write(&path, format!("{}{}", pem(7), pem(9))).unwrap();
    let app = app_with(Db::Sqlite, |c| {
        c.auth.signing_keys_file = Some(path.clone())
    })
    .await;
    let keys = app.get("/.well-known/jwks.json").await.body["keys"].clone();
    assert_eq!(keys.as_array().unwrap().len(), 2, "{keys}");
    let admin = admin(&app).await;
    let client = register_client(
        &app,
        &admin,
        json!({"name": "P", "scopes": ["profile:read"]}),
    )
    .await;
    let token = token_for(&app.address, &client, None).await;
    let (kid, _) = verify_with_jwks(&app.address, token["access_token"].as_str().unwrap()).await;
    assert_eq!(kid, keys[0]["kid"].as_str().unwrap());
    app.post_authed("/api/v1/signing-keys/rotate", &admin, &json!({}))
        .await
        .assert_error(409, "conflict");
    std::fs::remove_dir_all(dir).unwrap();
}

/// Needs the scope checks on every route (the lead's part of issue 18): a token without
/// `profile:read` is refused by `GET /api/v1/me`, and without `orders:read` by
/// `GET /api/v1/orders`.
#[actix_web::test]
async fn a_token_without_the_scope_a_route_needs_gets_403_insufficient_scope() {
    let app = app_with(Db::Sqlite, |_| {}).await;
    let admin = admin(&app).await;
    let client = register_client(
        &app,
        &admin,
        json!({"name": "P", "scopes": ["orders:read", "maps:read"]}),
    )
    .await;
    let token = token_for(&app.address, &client, Some("maps:read")).await;
    let token = token["access_token"].as_str().unwrap();
    app.get_authed("/api/v1/me", token)
        .await
        .assert_error(403, "insufficient_scope");
    app.get_authed("/api/v1/orders", token)
        .await
        .assert_error(403, "insufficient_scope");
    let orders = token_for(&app.address, &client, Some("orders:read")).await;
    let reply = app
        .get_authed("/api/v1/orders", orders["access_token"].as_str().unwrap())
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
}

#[actix_web::test]
async fn a_token_signed_by_a_key_we_never_published_gets_401_invalid_token() {
    use ed25519_dalek::pkcs8::EncodePrivateKey;
    let app = app_with(Db::Sqlite, |_| {}).await;
    let admin = admin(&app).await;
    let client = register_client(
        &app,
        &admin,
        json!({"name": "P", "scopes": ["profile:read"]}),
    )
    .await;
    let genuine = token_for(&app.address, &client, None).await;
    let genuine = genuine["access_token"].as_str().unwrap();
    let (kid, claims) = verify_with_jwks(&app.address, genuine).await;
    // The same claims, signed by a stranger's key: under our kid, and under a kid of its own
    // (which makes the replica reload its keys once, then refuse).
    let der = ed25519_dalek::SigningKey::from_bytes(&[42; 32])
        .to_pkcs8_der()
        .unwrap();
    let stranger = jsonwebtoken::EncodingKey::from_ed_der(der.as_bytes());
    let now = chrono::Utc::now().timestamp();
    let body = json!({
        "iss": claims.custom.iss, "aud": claims.custom.aud, "sub": claims.custom.sub,
        "client_id": claims.custom.client_id, "scope": claims.custom.scope,
        "role": claims.custom.role, "iat": now, "exp": now + 60, "jti": "forged",
    });
    for forged_kid in [
        kid.as_str(),
        "a-kid-nobody-published",
        "another-unknown-kid",
    ] {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
        header.typ = Some("at+jwt".into());
        header.kid = Some(forged_kid.into());
        let forged = jsonwebtoken::encode(&header, &body, &stranger).unwrap();
        app.get_authed("/api/v1/me", &forged)
            .await
            .assert_error(401, "invalid_token");
    }
    assert_eq!(app.get_authed("/api/v1/me", genuine).await.status, 200);
}

#[actix_web::test]
async fn until_the_signing_keys_are_loaded_tokens_are_neither_issued_nor_verified_but_503() {
    // A database nobody answers at: the keys can never be loaded.
    let port = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut config = crate::helpers::config_for(mealkitz::config::DatabaseUrl::Postgres(
        mealkitz::config::Secret::new(format!("postgres://postgres@127.0.0.1:{port}/nothing")),
    ));
    config.notify.public_url = PUBLIC_URL.to_owned();
    let app = crate::helpers::start_without_db(config).await;

    let jwks = Reply::read(
        reqwest::get(format!("{}/.well-known/jwks.json", app.address))
            .await
            .unwrap(),
    )
    .await;
    jwks.assert_error(503, "store_unavailable");
    let token = token_request(
        &app.address,
        Some(("mkc_0123456789abcdef0123", "mkcs_secret")),
        FORM,
        "grant_type=client_credentials",
        &[],
    )
    .await;
    assert_oauth_error("keys not loaded", &token, 503, "store_unavailable");
    assert!(header(&token, "retry-after").is_some());
    // A token shaped like ours cannot be checked yet either.
    use ed25519_dalek::pkcs8::EncodePrivateKey;
    let der = ed25519_dalek::SigningKey::from_bytes(&[5; 32])
        .to_pkcs8_der()
        .unwrap();
    let mut header_ = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    header_.typ = Some("at+jwt".into());
    header_.kid = Some("k".into());
    let shaped = jsonwebtoken::encode(
        &header_,
        &json!({"sub": "x", "exp": chrono::Utc::now().timestamp() + 60}),
        &jsonwebtoken::EncodingKey::from_ed_der(der.as_bytes()),
    )
    .unwrap();
    let me = Reply::read(
        reqwest::Client::new()
            .get(format!("{}/api/v1/me", app.address))
            .bearer_auth(shaped)
            .send()
            .await
            .unwrap(),
    )
    .await;
    me.assert_error(503, "store_unavailable");
    app.handle.stop(false).await;
}
