//! Sign-in with an OpenID provider, over real HTTP against a real provider: `oidc-provider` from
//! npm (OpenID Certified), run by `node web/tests/oidc-provider.mjs` (install it with
//! `cd web/tests && npm ci`; scripts/test.sh does). Its development login and consent forms are
//! filled in by following redirects and posting the forms as a browser would.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use mealkitz::config::{Config, OidcConfig, Secret};
use mealkitz::store::OidcLogin;
use reqwest::header::{ACCEPT, COOKIE, LOCATION, SET_COOKIE};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command};

use crate::helpers::{
    Db, Reply, TestApp, TestDb, each_backend, migrated_store, spawn_app, spawn_app_with,
    test_config,
};
use crate::osrm_support::free_port;

const CLIENT_ID: &str = "mealkitz-api-test";
const CLIENT_SECRET: &str = "api-test-client-secret-0123456789";
/// Redirects a sign-in takes at most (mealkitz → provider → its forms → back).
const MAX_HOPS: usize = 20;

/// `oidc-provider` running in Node on `port`, killed when dropped.
struct Provider {
    issuer: String,
    child: Child,
}

impl Provider {
    /// Starts the provider on `port` with one client whose redirect URI is `redirect_uri`; the
    /// email and profile claims come from its userinfo endpoint, and, with `claims_in_id_token`,
    /// in the ID token too.
    async fn start(port: u16, redirect_uri: &str, claims_in_id_token: bool) -> Provider {
        let tests = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("web/tests");
        assert!(
            tests.join("node_modules/oidc-provider").exists(),
            "oidc-provider is not installed: run `cd web/tests && npm ci` (scripts/test.sh does)"
        );
        let mut child = Command::new("node")
            .arg(tests.join("oidc-provider.mjs"))
            .args(["--port", &port.to_string(), "--client-id", CLIENT_ID])
            .args([
                "--client-secret",
                CLIENT_SECRET,
                "--redirect-uri",
                redirect_uri,
            ])
            .args(claims_in_id_token.then_some("--claims-in-id-token"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("node runs (install Node.js for the provider)");
        let stdout = child.stdout.take().unwrap();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        // Reads its stdout to the end, so it never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut ready_tx = Some(ready_tx);
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(issuer) = line.strip_prefix("ready ")
                    && let Some(tx) = ready_tx.take()
                {
                    let _ = tx.send(issuer.to_owned());
                }
            }
        });
        let mut provider = Provider {
            issuer: String::new(),
            child,
        };
        provider.issuer = tokio::time::timeout(Duration::from_secs(20), ready_rx)
            .await
            .expect("oidc-provider ready within 20 s")
            .expect("oidc-provider exited before it was ready");
        provider
    }

    async fn stop(self) {
        drop(self);
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn oidc_config(issuer: &str, app_port: u16) -> OidcConfig {
    OidcConfig {
        issuer: issuer.to_owned(),
        client_id: CLIENT_ID.to_owned(),
        client_secret: Secret::new(CLIENT_SECRET),
        name: "Test ID".to_owned(),
        redirect_url: format!("http://127.0.0.1:{app_port}/auth/oidc/callback"),
        timeout: Duration::from_secs(2),
    }
}

/// An app on a fixed port (the provider must know its redirect URI before either starts), with
/// the provider at `issuer`.
async fn app_with_provider(kind: Db, issuer: &str, app_port: u16) -> TestApp {
    let db = TestDb::create(kind).await;
    let mut config: Config = test_config(&db);
    config.http.bind = ([127, 0, 0, 1], app_port).into();
    config.oidc = Some(oidc_config(issuer, app_port));
    spawn_app_with(db, config).await
}

/// An app and the provider it signs in with (claims from its userinfo endpoint).
async fn app_and_provider(kind: Db) -> (TestApp, Provider) {
    app_and_provider_with(kind, false).await
}

async fn app_and_provider_with(kind: Db, claims_in_id_token: bool) -> (TestApp, Provider) {
    let app_port = free_port();
    let provider = Provider::start(
        free_port(),
        &format!("http://127.0.0.1:{app_port}/auth/oidc/callback"),
        claims_in_id_token,
    )
    .await;
    let app = app_with_provider(kind, &provider.issuer, app_port).await;
    (app, provider)
}

/// A client that follows no redirect, so each hop is seen.
fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// A browser's worth of the provider's side: a cookie jar (names only: the provider's cookies
/// are few and distinct), redirects followed by hand, and its two forms posted.
struct Browser {
    client: reqwest::Client,
    cookies: BTreeMap<String, String>,
}

impl Browser {
    fn new() -> Browser {
        Browser {
            client: no_redirects(),
            cookies: BTreeMap::new(),
        }
    }

    fn keep_cookies(&mut self, response: &reqwest::Response) {
        for value in response.headers().get_all(SET_COOKIE) {
            let Some(pair) = value.to_str().ok().and_then(|v| v.split(';').next()) else {
                continue;
            };
            if let Some((name, value)) = pair.split_once('=') {
                self.cookies
                    .insert(name.trim().to_owned(), value.to_owned());
            }
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// From the provider's authorization URL, signs in as `login`, consents, and returns the
    /// URL the provider sends the person back to (mealkitz's callback with code and state).
    async fn sign_in(&mut self, authorize_url: &str, login: &str, app_base: &str) -> String {
        let mut url = reqwest::Url::parse(authorize_url).unwrap();
        for _ in 0..MAX_HOPS {
            if url.as_str().starts_with(app_base) {
                return url.to_string();
            }
            let response = self
                .client
                .get(url.clone())
                .header(COOKIE, self.cookie_header())
                .send()
                .await
                .unwrap();
            self.keep_cookies(&response);
            let response = if response.status().is_redirection() {
                response
            } else {
                let status = response.status();
                let html = response.text().await.unwrap();
                assert_eq!(status, 200, "the provider's page at {url}: {html}");
                let action = html
                    .split("action=\"")
                    .nth(1)
                    .and_then(|rest| rest.split('"').next())
                    .unwrap_or_else(|| panic!("no form at {url}: {html}"));
                let form: Vec<(&str, &str)> = if html.contains("name=\"login\"") {
                    vec![("prompt", "login"), ("login", login), ("password", "any")]
                } else {
                    vec![("prompt", "consent")]
                };
                let posted = self
                    .client
                    .post(url.join(action).unwrap())
                    .header(COOKIE, self.cookie_header())
                    .form(&form)
                    .send()
                    .await
                    .unwrap();
                self.keep_cookies(&posted);
                posted
            };
            assert!(
                response.status().is_redirection(),
                "{} from the provider at {url}",
                response.status()
            );
            let location = response.headers()[LOCATION].to_str().unwrap().to_owned();
            url = url.join(&location).unwrap();
        }
        panic!("the sign-in did not come back within {MAX_HOPS} redirects");
    }
}

/// `GET path` on the app without following redirects, as a script (`browser` false) or not.
async fn get_raw(app: &TestApp, path_or_url: &str, browser: bool) -> Reply {
    get_with(app, path_or_url, browser.then_some("")).await
}

/// `GET path` on the app as a browser (`Accept: text/html`) holding `cookies`.
async fn get_in_browser(app: &TestApp, path_or_url: &str, cookies: &str) -> Reply {
    get_with(app, path_or_url, Some(cookies)).await
}

async fn get_with(app: &TestApp, path_or_url: &str, browser_cookies: Option<&str>) -> Reply {
    let url = if path_or_url.starts_with("http") {
        path_or_url.to_owned()
    } else {
        app.url(path_or_url)
    };
    let mut request = no_redirects().get(url);
    if let Some(cookies) = browser_cookies {
        request = request.header(ACCEPT, "text/html,application/xhtml+xml");
        if !cookies.is_empty() {
            request = request.header(COOKIE, cookies);
        }
    }
    Reply::read(request.send().await.unwrap()).await
}

/// The `name=value` of the cookie `/auth/oidc/login` ties the sign-in to the browser with.
fn binding_cookie(start: &Reply) -> String {
    let set = start.headers[SET_COOKIE].to_str().unwrap();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Lax") && set.contains("Path=/auth/oidc"),
        "{set}"
    );
    set.split(';').next().unwrap().to_owned()
}

/// The `state` of the provider's authorization URL a login start redirects to.
fn state_of(start: &Reply) -> String {
    let authorize = reqwest::Url::parse(&location(start)).unwrap();
    authorize
        .query_pairs()
        .find(|(k, _)| k == "state")
        .unwrap()
        .1
        .into_owned()
}

/// Asserts 400 `oidc_login_failed` whose message says `why`.
#[track_caller]
fn assert_login_failed(reply: &Reply, why: &str) {
    reply.assert_error(400, "oidc_login_failed");
    let message = reply.body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains(why), "expected {why:?} in {}", reply.text);
}

/// The message stateless failures give: the state is not (or no longer) in the store.
const UNKNOWN_STATE: &str = "unknown, expired (after 10 minutes) or was used already";

fn location(reply: &Reply) -> String {
    assert_eq!(reply.status, 302, "{}", reply.text);
    reply.headers[LOCATION].to_str().unwrap().to_owned()
}

/// Signs `login` in from `return_to`; answers the callback URL the provider sent back, and the
/// binding cookie a browser would hold.
async fn provider_callback_and_cookie(
    app: &TestApp,
    login: &str,
    return_to: &str,
) -> (String, String) {
    let start = get_raw(
        app,
        &format!("/auth/oidc/login?return_to={return_to}"),
        false,
    )
    .await;
    let authorize = location(&start);
    let callback = Browser::new()
        .sign_in(&authorize, login, &app.address)
        .await;
    (callback, binding_cookie(&start))
}

/// [`provider_callback_and_cookie`] for a script: the callback URL alone.
async fn provider_callback(app: &TestApp, login: &str, return_to: &str) -> String {
    provider_callback_and_cookie(app, login, return_to).await.0
}

/// The token in `#token=…` of a redirect to `page`.
fn token_for(reply: &Reply, page: &str) -> String {
    let location = location(reply);
    let token = location
        .strip_prefix(&format!("{page}#token="))
        .unwrap_or_else(|| panic!("not back at {page} with a token: {location}"));
    token.to_owned()
}

// ---- Not configured ----------------------------------------------------------------------

each_backend! {
    without_a_provider_sign_in_is_off_and_its_routes_answer_404_oidc_not_configured => not_configured;
}

async fn not_configured(kind: Db) {
    let app = spawn_app(kind).await;
    // The pages' question has an answer, not an error: sign-in is off.
    let info = app.get("/auth/oidc").await;
    assert_eq!(info.status, 200, "{}", info.text);
    assert_eq!(info.body, serde_json::json!({ "enabled": false }));
    for path in [
        "/auth/oidc/login",
        "/auth/oidc/login?return_to=/merchant",
        "/auth/oidc/callback?code=x&state=y",
    ] {
        app.get(path).await.assert_error(404, "oidc_not_configured");
    }
}

// ---- The whole flow against the real provider ------------------------------------------

each_backend! {
    a_browser_finishes_only_the_sign_in_it_started => bound_to_the_browser;
    a_new_person_signs_in_as_a_customer_and_again_into_the_same_account => new_person;
    a_callback_state_works_once_and_a_replay_gets_400 => replayed_state;
    a_verified_email_links_the_existing_account_and_an_unverified_one_is_refused => linking;
}

/// With the claims in the ID token; the other tests read them from the userinfo endpoint.
async fn new_person(kind: Db) {
    let (app, provider) = app_and_provider_with(kind, true).await;
    let info = app.get("/auth/oidc").await;
    assert_eq!(info.status, 200, "{}", info.text);
    assert_eq!(
        info.body,
        serde_json::json!({ "enabled": true, "name": "Test ID", "login_url": "/auth/oidc/login" })
    );

    let start = get_raw(&app, "/auth/oidc/login?return_to=/order", false).await;
    let authorize = reqwest::Url::parse(&location(&start)).unwrap();
    assert!(
        authorize.as_str().starts_with(&provider.issuer),
        "{authorize}"
    );
    let params: BTreeMap<String, String> = authorize.query_pairs().into_owned().collect();
    assert_eq!(params["response_type"], "code");
    assert_eq!(params["client_id"], CLIENT_ID);
    assert_eq!(params["code_challenge_method"], "S256");
    let scopes: Vec<&str> = params["scope"].split(' ').collect();
    for scope in ["openid", "email", "profile"] {
        assert!(scopes.contains(&scope), "scope {scope} in {scopes:?}");
    }
    assert!(params["state"].len() >= 16 && params["nonce"].len() >= 16);

    let login = format!("new-{}@example.com", uuid::Uuid::new_v4().simple());
    let callback = Browser::new()
        .sign_in(authorize.as_str(), &login, &app.address)
        .await;
    let back = get_in_browser(&app, &callback, &binding_cookie(&start)).await;
    let token = token_for(&back, "/order");
    let cleared = back.headers[SET_COOKIE].to_str().unwrap();
    assert!(
        cleared.contains("Max-Age=0"),
        "the binding cookie is spent: {cleared}"
    );
    let me = app.get_authed("/api/v1/me", &token).await;
    assert_eq!(me.status, 200, "{}", me.text);
    assert_eq!(me.body["email"], login.as_str());
    assert_eq!(me.body["role"], "customer");
    assert!(me.body["name"].as_str().unwrap().starts_with("OIDC new-"));
    // Nobody can log in with a password to an account made this way.
    app.login(&login, "!oidc-no-password")
        .await
        .assert_error(401, "invalid_credentials");

    let again = provider_callback(&app, &login, "/").await;
    let token_again = token_for(&get_raw(&app, &again, false).await, "/");
    let me_again = app.get_authed("/api/v1/me", &token_again).await;
    assert_eq!(me_again.body["id"], me.body["id"], "the same account");
    provider.stop().await;
}

/// Login CSRF: an attacker signs in at the provider and sends the victim the link back; the
/// victim's browser has no cookie for that sign-in, so it is refused and the victim is not
/// signed into the attacker's account. The sign-in stays the attacker's to finish.
async fn bound_to_the_browser(kind: Db) {
    let (app, provider) = app_and_provider(kind).await;
    let attacker = format!("attacker-{}@example.com", uuid::Uuid::new_v4().simple());
    let (callback, cookie) = provider_callback_and_cookie(&app, &attacker, "/order").await;

    // The victim's browser: no cookie, then the cookie of a sign-in of its own.
    let no_cookie = get_in_browser(&app, &callback, "").await;
    let back = location(&no_cookie);
    assert!(
        back.starts_with("/#oidc_error=oidc_login_failed&message="),
        "{back}"
    );
    assert!(!back.contains("token="), "{back}");
    let own = binding_cookie(&get_raw(&app, "/auth/oidc/login", false).await);
    let other_cookie = get_in_browser(&app, &callback, &own).await;
    assert!(
        location(&other_cookie).contains("oidc_error="),
        "{}",
        other_cookie.text
    );

    // The browser that started it finishes it.
    let finished = get_in_browser(&app, &callback, &cookie).await;
    let token = token_for(&finished, "/order");
    let me = app.get_authed("/api/v1/me", &token).await;
    assert_eq!(me.body["email"], attacker.as_str());
    provider.stop().await;
}

async fn replayed_state(kind: Db) {
    let (app, provider) = app_and_provider(kind).await;
    let login = format!("replay-{}@example.com", uuid::Uuid::new_v4().simple());
    let (callback, cookie) = provider_callback_and_cookie(&app, &login, "/merchant").await;
    let first = get_raw(&app, &callback, false).await;
    token_for(&first, "/merchant");

    // The same callback again (a replay, a reload): the state is gone.
    let replay = get_raw(&app, &callback, false).await;
    assert_login_failed(&replay, UNKNOWN_STATE);
    // A browser gets the message on the page instead.
    let in_browser = get_in_browser(&app, &callback, &cookie).await;
    let back = location(&in_browser);
    assert!(
        back.starts_with("/#oidc_error=oidc_login_failed&message="),
        "{back}"
    );
    assert!(back.contains("used+already"), "{back}");

    // A state nobody issued, and none at all.
    let forged = get_raw(&app, "/auth/oidc/callback?code=x&state=forged", false).await;
    assert_login_failed(&forged, UNKNOWN_STATE);
    let stateless = get_raw(&app, "/auth/oidc/callback?code=x", false).await;
    assert_login_failed(&stateless, "without its state");

    // A real state with a code the provider never issued: refused, and the state is used up.
    let start = get_raw(&app, "/auth/oidc/login", false).await;
    let state = state_of(&start);
    let forged = format!("/auth/oidc/callback?code=not-a-code&state={state}");
    let refused = get_raw(&app, &forged, false).await;
    assert_login_failed(&refused, "refused the sign-in's code");
    let again = get_raw(&app, &forged, false).await;
    assert_login_failed(&again, UNKNOWN_STATE);

    // The provider refusing (the person cancelled) comes back to the page with the reason.
    let start = get_raw(&app, "/auth/oidc/login?return_to=/driver", false).await;
    let state = state_of(&start);
    let refused = get_in_browser(
        &app,
        &format!("/auth/oidc/callback?error=access_denied&state={state}"),
        &binding_cookie(&start),
    )
    .await;
    let back = location(&refused);
    assert!(
        back.starts_with("/driver#oidc_error=oidc_login_failed&message="),
        "{back}"
    );
    assert!(back.contains("cancelled"), "{back}");

    // A state older than 10 minutes is refused.
    let store = migrated_store(&app.db).await;
    let stale = "stale-state-0123456789abcdef";
    store
        .insert_oidc_login(&OidcLogin {
            state: stale.to_owned(),
            nonce: "n".to_owned(),
            pkce_verifier: "v".to_owned(),
            return_to: "/".to_owned(),
            created_at: mealkitz::store::now() - chrono::Duration::minutes(11),
        })
        .await
        .unwrap();
    let expired = get_raw(
        &app,
        &format!("/auth/oidc/callback?code=x&state={stale}"),
        false,
    )
    .await;
    assert_login_failed(&expired, UNKNOWN_STATE);
    provider.stop().await;
}

async fn linking(kind: Db) {
    let (app, provider) = app_and_provider(kind).await;
    // A merchant with a password account signs in with the same, verified, email: linked.
    let merchant = app.signed_up("merchant").await;
    let callback = provider_callback(&app, &merchant.email, "/merchant").await;
    let token = token_for(&get_raw(&app, &callback, false).await, "/merchant");
    let me = app.get_authed("/api/v1/me", &token).await;
    assert_eq!(
        me.body["id"],
        merchant.id.as_str(),
        "linked, not a new account"
    );
    assert_eq!(me.body["role"], "merchant");

    // An account whose email the provider does not verify for this person: refused.
    let email = format!("unverified-{}@example.com", uuid::Uuid::new_v4().simple());
    let registered = app
        .register(&email, "correct horse battery", "customer")
        .await;
    assert_eq!(registered.status, 201, "{}", registered.text);
    let callback = provider_callback(&app, &email, "/").await;
    let refused = get_raw(&app, &callback, false).await;
    assert_login_failed(&refused, "already exists");
    // And it stays refused (no half-made link), while the password still works.
    let callback = provider_callback(&app, &email, "/").await;
    assert_login_failed(&get_raw(&app, &callback, false).await, "already exists");
    let session = app.login(&email, "correct horse battery").await;
    assert_eq!(session.body["user"]["id"], registered.body["id"]);
    provider.stop().await;
}

// ---- Return addresses ----------------------------------------------------------------------

#[actix_web::test]
async fn return_to_accepts_only_paths_of_this_site() {
    let (app, provider) = app_and_provider(Db::Sqlite).await;
    for bad in [
        "//evil.example/",
        "https://evil.example/",
        "/%5Cevil.example",
        "evil",
        "/%23token",
        "/a%20b",
    ] {
        let reply = get_raw(&app, &format!("/auth/oidc/login?return_to={bad}"), false).await;
        assert_eq!(reply.status, 400, "case {bad:?}: {}", reply.text);
        assert_eq!(reply.error_code(), "invalid_query", "case {bad:?}");
    }
    for good in ["/", "/merchant", "/track/abc%3Fx", "/order?x=1"] {
        let reply = get_raw(&app, &format!("/auth/oidc/login?return_to={good}"), false).await;
        assert!(
            location(&reply).starts_with(&provider.issuer),
            "case {good:?}"
        );
    }
    provider.stop().await;
}

// ---- The provider down -------------------------------------------------------------------

#[actix_web::test]
async fn a_provider_that_is_down_gets_503_and_sign_in_recovers_when_it_is_back() {
    let app_port = free_port();
    let provider_port = free_port();
    let issuer = format!("http://127.0.0.1:{provider_port}");
    let app = app_with_provider(Db::Sqlite, &issuer, app_port).await;

    // Nothing listens at the issuer yet.
    let down = get_raw(&app, "/auth/oidc/login", false).await;
    down.assert_error(503, "oidc_provider_unavailable");
    assert!(
        down.headers.contains_key("retry-after"),
        "{:?}",
        down.headers
    );
    // The button's information needs no provider; /ready reports it, still ready.
    assert_eq!(app.get("/auth/oidc").await.status, 200);
    let ready = app.get("/ready").await;
    assert_eq!(ready.status, 200, "{}", ready.text);
    let check = ready.body["checks"]["oidc"].as_str().unwrap();
    assert!(check.starts_with("degraded: "), "{check}");

    // The provider comes up: the next sign-in works without a restart.
    let provider = Provider::start(
        provider_port,
        &format!("http://127.0.0.1:{app_port}/auth/oidc/callback"),
        false,
    )
    .await;
    assert_eq!(provider.issuer, issuer);
    let login = format!("late-{}@example.com", uuid::Uuid::new_v4().simple());
    let callback = provider_callback(&app, &login, "/").await;
    assert_eq!(app.get("/ready").await.body["checks"]["oidc"], "ok");

    // It goes down between the sign-in page and the way back: the code cannot be exchanged.
    provider.stop().await;
    get_raw(&app, &callback, false)
        .await
        .assert_error(503, "oidc_provider_unavailable");
}
