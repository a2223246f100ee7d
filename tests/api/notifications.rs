//! Notifications end to end: order transitions reach the customer on WhatsApp (a Graph API
//! stand-in records what was sent and answers with WhatsApp's error codes) and the merchant's
//! webhook endpoints (a receiver verifies every delivery with the `standardwebhooks` crate), once
//! per transition, in order, each message with one id on every attempt and to every destination;
//! errors are retried, turned into templates or pause the channel as WhatsApp's codes ask; and no
//! message is lost when the sending process is SIGKILLed or when two replicas share the work.
//! Phones, consent and endpoints are set through the REST API; only the customer-service window
//! (opened by an inbound WhatsApp message, whose webhook is the next issue's) is set in the store.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use chrono::Utc;
use mealkitz::actors::commands::{
    self, AnswerOffer, MerchantAccept, MerchantReady, MerchantReject,
};
use mealkitz::config::notify::WhatsAppAccount;
use mealkitz::config::{Config, Secret};
use mealkitz::domain::notification::order_code;
use mealkitz::domain::{NotifyEvent, OrderId, Phone};
use mealkitz::notify::signing::new_secret;
use mealkitz::store::Store;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{
    Db, Driver, Reply, Session, TestApp, TestDb, at, migrated_store, next_offer, offset_m,
    spawn_app_with, test_config,
};
use crate::notify_support::{
    ACCESS_TOKEN, API_VERSION, ARRIVES_WITHIN, GraphAnswer, GraphApi, GraphRequest, Hook,
    HookAnswer, PHONE_NUMBER_ID, WebhookReceiver,
};
use crate::processes::{Processes, Shop};
use crate::ws::{Cast, cast};

/// The customer's phone, and the digits WhatsApp is asked to send to.
const CUSTOMER_PHONE: &str = "+358401234567";
const CUSTOMER_DIGITS: &str = "358401234567";
/// Another customer's phone.
const OTHER_PHONE: &str = "+358409876543";
const OTHER_DIGITS: &str = "358409876543";
/// The merchant `open_shop` makes.
const MERCHANT_NAME: &str = "Noodle Lab";
/// The first name of every user the helpers sign up ("Test User").
const FIRST_NAME: &str = "Test";
/// How long a test watches for something that must not happen (a message after the channel
/// paused, a delivery to a disabled endpoint).
const QUIET: Duration = Duration::from_secs(3);
/// How long a driver waits for an offer.
const OFFER_WITHIN: Duration = Duration::from_secs(10);
/// The public address the tests configure.
const PUBLIC_URL: &str = "http://localhost:8000";
/// The events a customer is told about over a whole delivery, in order.
const DELIVERY_MESSAGES: [&str; 4] = [
    "order.accepted",
    "order.driver_assigned",
    "order.picked_up",
    "order.delivered",
];
/// Every event of a whole delivery, in order (what a merchant subscribed to all receives).
const DELIVERY_EVENTS: [&str; 6] = [
    "order.placed",
    "order.accepted",
    "order.driver_assigned",
    "order.ready",
    "order.picked_up",
    "order.delivered",
];

// ---- An engine with a notifier, a merchant with an endpoint, a customer who agreed. ----

/// A test application configured to send WhatsApp messages to `graph`.
fn notify_config(db: &TestDb, graph: &GraphApi) -> Config {
    let mut config = test_config(db);
    config.notify.whatsapp_api_url = graph.url.clone();
    config.notify.whatsapp_api_version = API_VERSION.to_owned();
    config.notify.whatsapp = Some(WhatsAppAccount {
        phone_number_id: PHONE_NUMBER_ID.to_owned(),
        token: Secret::new(ACCESS_TOKEN),
    });
    config.notify.webhook_allow_private = true;
    config.notify.public_url = PUBLIC_URL.to_owned();
    config
}

/// Every event a merchant may subscribe to.
fn all_events() -> Vec<&'static str> {
    NotifyEvent::ALL.map(NotifyEvent::as_str).to_vec()
}

/// The body of `POST …/webhooks` registering `url` for `events`.
fn webhook_body(url: &str, events: &[&str]) -> Value {
    json!({"url": url, "events": events})
}

/// A registered webhook endpoint and its secret.
struct Endpoint {
    id: Uuid,
    secret: String,
}

/// The endpoint a `POST …/webhooks` registered (201, with its secret shown once).
#[track_caller]
fn registered(reply: &Reply) -> Endpoint {
    assert_eq!(reply.status, 201, "{}", reply.text);
    let secret = reply.body["secret"].as_str().unwrap_or_default().to_owned();
    assert!(secret.starts_with("whsec_"), "{}", reply.text);
    Endpoint {
        id: reply.body["id"].as_str().unwrap().parse().unwrap(),
        secret,
    }
}

/// `PATCH /api/v1/me` with `body` (`phone`, `notify_whatsapp`), which must succeed.
async fn patch_me(app: &TestApp, who: &Session, body: Value) -> Reply {
    let reply = app
        .request("PATCH", "/api/v1/me", Some(&who.token), &[], Some(&body))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    reply
}

/// One message made about an order, as `GET /api/v1/orders/{id}/notifications` shows it.
#[derive(Clone, Debug)]
struct Made {
    channel: String,
    event: String,
    message_id: String,
    state: String,
}

#[track_caller]
fn made_of(reply: &Reply) -> Vec<Made> {
    assert_eq!(reply.status, 200, "{}", reply.text);
    let text = |n: &Value, field: &str| n[field].as_str().unwrap_or_default().to_owned();
    reply.body["notifications"]
        .as_array()
        .unwrap_or_else(|| panic!("{}", reply.text))
        .iter()
        .map(|n| Made {
            channel: text(n, "channel"),
            event: text(n, "event"),
            message_id: text(n, "message_id"),
            state: text(n, "state"),
        })
        .collect()
}

/// The message id of each event on `channel`.
fn ids_by_event(made: &[Made], channel: &str) -> BTreeMap<String, String> {
    made.iter()
        .filter(|n| n.channel == channel)
        .map(|n| (n.event.clone(), n.message_id.clone()))
        .collect()
}

fn phone(raw: &str) -> Phone {
    Phone::parse(raw).unwrap()
}

/// `cents` as the customer reads it (`$24.50`), in the currency sign the web app shows too.
fn money(cents: i64) -> String {
    format!(
        "{}{}.{:02}",
        mealkitz::domain::notification::CURRENCY_SIGN,
        cents / 100,
        cents % 100
    )
}

/// Whether `id` looks like our message ids: `msg_` and 32 hex digits.
fn is_message_id(id: &str) -> bool {
    id.strip_prefix("msg_")
        .is_some_and(|hex| hex.len() == 32 && hex.chars().all(|c| c.is_ascii_hexdigit()))
}

/// One application with its stand-ins: the Graph API, a webhook receiver registered for every
/// event of the merchant, and a customer with a phone who agreed to WhatsApp updates.
struct Scene {
    app: TestApp,
    /// For opening the customer-service window, and for ending a rotation's grace period.
    store: Store,
    graph: GraphApi,
    hooks: WebhookReceiver,
    cast: Cast,
    endpoint: Endpoint,
}

impl Scene {
    async fn start(kind: Db) -> Scene {
        let graph = GraphApi::start().await;
        let hooks = WebhookReceiver::start().await;
        let db = TestDb::create(kind).await;
        let config = notify_config(&db, &graph);
        let app = spawn_app_with(db, config).await;
        let store = migrated_store(&app.db).await;
        let cast = cast(&app, at(-5_000.0, -5_000.0)).await;
        let me = patch_me(
            &app,
            &cast.customer,
            json!({"phone": "+358 40 123 4567", "notify_whatsapp": true}),
        )
        .await;
        assert_eq!(me.body["phone"], CUSTOMER_PHONE, "{}", me.text);
        assert_eq!(me.body["notify_whatsapp"], true, "{}", me.text);
        let endpoint = registered(
            &app.post_authed(
                &format!("/api/v1/merchants/{}/webhooks", cast.merchant_id),
                &cast.merchant_owner.token,
                &webhook_body(&hooks.url, &all_events()),
            )
            .await,
        );
        hooks.trust(&[&endpoint.secret]);
        Scene {
            app,
            store,
            graph,
            hooks,
            cast,
            endpoint,
        }
    }

    /// Opens the customer-service window of `raw`: it wrote to us a minute ago.
    async fn customer_wrote(&self, raw: &str) {
        self.store
            .record_whatsapp_inbound(&phone(raw), Utc::now() - chrono::Duration::minutes(1))
            .await
            .unwrap();
    }

    /// A driver online near the kitchen.
    async fn driver(&self) -> Driver {
        self.app
            .driver_at(offset_m(self.cast.pickup, -300.0, 0.0))
            .await
    }

    /// Checks out an order for `customer` with `contact` (`phone`, `notify_whatsapp`) in the
    /// body: its id and total.
    async fn checkout_with(&self, customer: &Session, contact: Value) -> (OrderId, i64) {
        let dropoff = offset_m(self.cast.pickup, 1_000.0, 0.0);
        let mut body = crate::checkout::order_body(&self.cast.shop, dropoff, "pm_card_visa");
        for (field, value) in contact.as_object().unwrap() {
            body[field] = value.clone();
        }
        let placed = crate::checkout::checkout(
            &self.app,
            &customer.token,
            &crate::checkout::new_key(),
            &body,
        )
        .await;
        assert_eq!(placed.status, 201, "{}", placed.text);
        (
            placed.body["id"].as_str().unwrap().parse().unwrap(),
            placed.body["total_cents"].as_i64().unwrap(),
        )
    }

    /// Checks out an order for `customer`: its id and total.
    async fn checkout_for(&self, customer: &Session) -> (OrderId, i64) {
        self.checkout_with(customer, json!({})).await
    }

    /// Checks out an order for the scene's customer.
    async fn place(&self) -> OrderId {
        self.checkout_for(&self.cast.customer).await.0
    }

    async fn accept(&self, order: OrderId) {
        self.app
            .engine
            .execute(MerchantAccept {
                merchant_id: self.cast.merchant_id,
                order_id: order,
                prep_minutes: 10,
            })
            .await
            .expect("accepted");
    }

    async fn reject(&self, order: OrderId, reason: &str) {
        self.app
            .engine
            .execute(MerchantReject {
                merchant_id: self.cast.merchant_id,
                order_id: order,
                reason: reason.to_owned(),
            })
            .await
            .expect("rejected");
    }

    /// The driver takes the offer of `order`.
    async fn assign(&self, order: OrderId, driver: &mut Driver) {
        let offer = next_offer(driver, OFFER_WITHIN)
            .await
            .expect("the driver is offered the order");
        assert_eq!(offer.order_id, order);
        self.app
            .engine
            .execute(AnswerOffer {
                driver: driver.id,
                offer_id: offer.offer_id,
                accept: true,
            })
            .await
            .expect("offer answered")
            .expect("assigned");
    }

    /// Accepted, assigned to `driver`, ready, picked up and delivered, in that order.
    async fn deliver(&self, order: OrderId, driver: &mut Driver) {
        self.accept(order).await;
        self.assign(order, driver).await;
        self.app
            .engine
            .execute(MerchantReady {
                merchant_id: self.cast.merchant_id,
                order_id: order,
            })
            .await
            .expect("ready");
        self.app
            .engine
            .execute(commands::PickedUp {
                driver: driver.id,
                order_id: order,
            })
            .await
            .expect("picked up");
        self.app
            .engine
            .execute(commands::Delivered {
                driver: driver.id,
                order_id: order,
            })
            .await
            .expect("delivered");
    }

    /// Waits until the merchant's endpoint got `last` of `order` (so every earlier transition
    /// was fanned out) and nothing about the order is pending any more; what was made about it.
    async fn settled(&self, order: OrderId, last: &str) -> Vec<Made> {
        let id = order.to_string();
        self.hooks
            .wait_for_matching(&format!("{last} of order {id}, answered 2xx"), |all| {
                all.iter()
                    .any(|h| h.order_id == id && h.event == last && h.status < 300)
            })
            .await;
        let deadline = Instant::now() + ARRIVES_WITHIN;
        loop {
            let made = self.notifications(order).await;
            if made.iter().all(|n| n.state != "pending") {
                return made;
            }
            assert!(
                Instant::now() < deadline,
                "notifications of order {order} still pending after {ARRIVES_WITHIN:?}: {made:#?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// What was made about `order`, as its merchant sees it.
    async fn notifications(&self, order: OrderId) -> Vec<Made> {
        made_of(
            &self
                .app
                .get_authed(
                    &format!("/api/v1/orders/{order}/notifications"),
                    &self.cast.merchant_owner.token,
                )
                .await,
        )
    }

    /// The deliveries of `order` the receiver got, in arrival order.
    fn hooks_of(&self, order: OrderId) -> Vec<Hook> {
        let id = order.to_string();
        self.hooks
            .hooks()
            .into_iter()
            .filter(|h| h.order_id == id)
            .collect()
    }

    fn webhooks_path(&self) -> String {
        format!("/api/v1/merchants/{}/webhooks", self.cast.merchant_id)
    }

    /// Registers another endpoint of the merchant, for every event.
    async fn register(&self, url: &str) -> Endpoint {
        registered(
            &self
                .app
                .post_authed(
                    &self.webhooks_path(),
                    &self.cast.merchant_owner.token,
                    &webhook_body(url, &all_events()),
                )
                .await,
        )
    }

    /// The deliveries of endpoint `id` (`GET …/deliveries`), newest first.
    async fn deliveries(&self, id: Uuid) -> Vec<Value> {
        let reply = self
            .app
            .get_authed(
                &format!("{}/{id}/deliveries", self.webhooks_path()),
                &self.cast.merchant_owner.token,
            )
            .await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        reply.body["deliveries"].as_array().unwrap().clone()
    }

    /// Endpoint `id` as `GET …/webhooks` lists it.
    async fn listed(&self, id: Uuid) -> Value {
        let reply = self
            .app
            .get_authed(&self.webhooks_path(), &self.cast.merchant_owner.token)
            .await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        reply.body["webhooks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|w| w["id"] == id.to_string())
            .cloned()
            .unwrap_or_else(|| panic!("endpoint {id} not listed: {}", reply.text))
    }
}

/// The requests whose message id is one of `ids`.
fn requests_with(requests: &[GraphRequest], ids: &BTreeSet<String>) -> Vec<GraphRequest> {
    requests
        .iter()
        .filter(|r| ids.contains(r.message_id()))
        .cloned()
        .collect()
}

/// Asserts what every request to the Graph API carries: the path of the configured number, the
/// token, the recipient and a message id.
#[track_caller]
fn assert_graph_request(request: &GraphRequest, to: &str) {
    assert_eq!(
        request.path,
        format!("/{API_VERSION}/{PHONE_NUMBER_ID}/messages"),
        "{}",
        request.summary()
    );
    assert_eq!(
        request.authorization.as_deref(),
        Some(format!("Bearer {ACCESS_TOKEN}").as_str()),
        "{}",
        request.summary()
    );
    assert_eq!(request.body["messaging_product"], "whatsapp");
    assert_eq!(request.body["recipient_type"], "individual");
    assert_eq!(request.to(), to, "{}", request.summary());
    assert!(is_message_id(request.message_id()), "{}", request.summary());
}

/// The value of the metric line that starts with `name` and has every one of `labels`.
fn metric(metrics: &str, name: &str, labels: &[&str]) -> Option<f64> {
    metrics
        .lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(['{', ' ']))
        })
        .find(|l| labels.iter().all(|label| l.contains(label)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

// ---- WhatsApp: one message per transition, in order, text or template. ----

crate::helpers::each_backend! {
    a_customer_who_agreed_gets_one_whatsapp_message_per_transition_in_order_as_templates_outside_the_window_and_text_inside => one_message_per_transition;
    without_consent_or_a_phone_no_whatsapp_message_is_sent_while_the_merchant_webhook_gets_every_event => no_consent_no_message;
    a_text_refused_with_131047_is_sent_again_as_its_template_with_the_same_id => window_closed_becomes_template;
    a_rejection_or_a_cancellation_tells_the_customer_the_card_hold_is_released => refund_in_message;
    a_merchant_endpoint_answering_500_then_200_gets_the_event_after_the_retry_with_the_same_webhook_id => webhook_retried;
    an_endpoint_answering_410_is_disabled_and_gets_no_later_event => webhook_gone;
    every_delivery_verifies_with_standardwebhooks_and_during_a_rotation_both_secrets_verify => signatures_and_rotation;
}

async fn one_message_per_transition(kind: Db) {
    let scene = Scene::start(kind).await;
    let mut driver = scene.driver().await;

    // Outside the customer-service window (the customer never wrote): templates.
    let first = scene.place().await;
    scene.deliver(first, &mut driver).await;
    let made = scene.settled(first, "order.delivered").await;
    let whatsapp = ids_by_event(&made, "whatsapp");
    assert_eq!(
        whatsapp.keys().cloned().collect::<BTreeSet<_>>(),
        DELIVERY_MESSAGES.map(str::to_owned).into_iter().collect(),
        "one WhatsApp message per transition the customer is told about, none for placed or ready: {made:#?}"
    );
    assert!(
        made.iter()
            .filter(|n| n.channel == "whatsapp")
            .all(|n| n.state == "sent"),
        "{made:#?}"
    );
    let requests = scene.graph.requests();
    assert_eq!(
        requests.len(),
        4,
        "exactly one request per message:\n{}",
        scene.graph.describe()
    );
    let code = order_code(first);
    for (request, event) in requests.iter().zip(DELIVERY_MESSAGES) {
        assert_graph_request(request, CUSTOMER_DIGITS);
        assert_eq!(request.status, 200);
        assert_eq!(request.kind(), "template", "{}", request.summary());
        let key = event.trim_start_matches("order.");
        assert_eq!(
            request.template(),
            format!("mealkitz_order_{key}"),
            "in order: {}",
            scene.graph.describe()
        );
        assert_eq!(request.body["template"]["language"]["code"], "en");
        assert_eq!(
            request.parameters().first(),
            Some(&code),
            "the order code comes first: {}",
            request.summary()
        );
        assert_eq!(
            request.message_id(),
            whatsapp[event],
            "the id sent is the one the API shows: {}",
            request.summary()
        );
    }
    let accepted = requests[0].parameters();
    assert_eq!(accepted.get(1).map(String::as_str), Some(MERCHANT_NAME));
    assert!(
        accepted
            .get(2)
            .is_some_and(|eta| eta.parse::<u32>().is_ok()),
        "the acceptance says when the order should arrive: {accepted:?}"
    );
    assert_eq!(
        requests[1].parameters().get(1).map(String::as_str),
        Some(FIRST_NAME),
        "the driver's first name"
    );
    let ids: BTreeSet<&str> = requests.iter().map(GraphRequest::message_id).collect();
    assert_eq!(ids.len(), 4, "each message has its own id");

    // The merchant got every event once, in order, with the same id per event as the customer.
    let hooks = scene.hooks_of(first);
    let events: Vec<&str> = hooks.iter().map(|h| h.event.as_str()).collect();
    assert_eq!(events, DELIVERY_EVENTS, "{}", scene.hooks.describe());
    for hook in &hooks {
        assert!(hook.verified, "{}", hook.summary());
        if let Some(id) = whatsapp.get(&hook.event) {
            assert_eq!(
                &hook.id, id,
                "one id per transition, the same to every destination"
            );
        }
    }

    // Inside the window (the customer wrote to us a minute ago): text.
    scene.customer_wrote(CUSTOMER_PHONE).await;
    let second = scene.place().await;
    scene.deliver(second, &mut driver).await;
    let made = scene.settled(second, "order.delivered").await;
    let second_ids = ids_by_event(&made, "whatsapp");
    let all = scene.graph.requests();
    assert_eq!(
        all.len(),
        8,
        "exactly one request per message:\n{}",
        scene.graph.describe()
    );
    let texts = requests_with(&all, &second_ids.values().cloned().collect());
    assert_eq!(texts.len(), 4, "{}", scene.graph.describe());
    let code = order_code(second);
    for (request, event) in texts.iter().zip(DELIVERY_MESSAGES) {
        assert_graph_request(request, CUSTOMER_DIGITS);
        assert_eq!(request.kind(), "text", "{}", request.summary());
        assert_eq!(request.body["text"]["preview_url"], false);
        assert_eq!(request.message_id(), second_ids[event], "in order");
        assert!(
            request.text().contains(&format!("#{code}")),
            "{}",
            request.summary()
        );
        assert!(!ids.contains(request.message_id()), "a new id per message");
    }
    assert!(
        texts[0].text().contains(MERCHANT_NAME) && texts[0].text().contains("min"),
        "the acceptance names the kitchen and the expected time: {}",
        texts[0].text()
    );
    assert!(
        texts[0]
            .text()
            .contains(&format!("{PUBLIC_URL}/track/{second}")),
        "a tracking link: {}",
        texts[0].text()
    );
    assert!(
        texts[1].text().contains(FIRST_NAME),
        "the driver's first name: {}",
        texts[1].text()
    );

    let metrics = scene.app.get("/metrics").await.text;
    assert_eq!(
        metric(
            &metrics,
            "notifications_total",
            &[r#"channel="whatsapp""#, r#"outcome="sent""#]
        ),
        Some(8.0),
        "{metrics}"
    );
    assert!(
        metric(&metrics, "notifier_lag_seconds", &[]).is_some(),
        "{metrics}"
    );
}

async fn no_consent_no_message(kind: Db) {
    let scene = Scene::start(kind).await;
    let customer = &scene.cast.customer;
    let mut driver = scene.driver().await;

    // A phone, but no consent: a whole delivery tells the merchant everything, the customer
    // nothing.
    patch_me(&scene.app, customer, json!({"notify_whatsapp": false})).await;
    let first = scene.place().await;
    scene.deliver(first, &mut driver).await;
    let made = scene.settled(first, "order.delivered").await;
    let events: Vec<String> = scene.hooks_of(first).into_iter().map(|h| h.event).collect();
    assert_eq!(events, DELIVERY_EVENTS, "{}", scene.hooks.describe());
    assert!(scene.hooks.hooks().iter().all(|h| h.verified));
    assert!(
        made.iter().all(|n| n.channel == "webhook"),
        "no WhatsApp message without consent: {made:#?}"
    );

    // Consent at checkout, but no phone anywhere.
    let me = patch_me(&scene.app, customer, json!({"phone": null})).await;
    assert_eq!(me.body["phone"], Value::Null, "{}", me.text);
    let (second, _) = scene
        .checkout_with(customer, json!({"notify_whatsapp": true}))
        .await;
    scene.reject(second, "closing early").await;
    let made = scene.settled(second, "order.rejected").await;
    assert!(made.iter().all(|n| n.channel == "webhook"), "{made:#?}");

    // The account agreed, but the checkout said no for this order.
    patch_me(
        &scene.app,
        customer,
        json!({"phone": CUSTOMER_PHONE, "notify_whatsapp": true}),
    )
    .await;
    let (third, _) = scene
        .checkout_with(customer, json!({"notify_whatsapp": false}))
        .await;
    scene.reject(third, "closing early").await;
    let made = scene.settled(third, "order.rejected").await;
    assert!(made.iter().all(|n| n.channel == "webhook"), "{made:#?}");
    assert!(
        scene.graph.requests().is_empty(),
        "nothing went to WhatsApp:\n{}",
        scene.graph.describe()
    );

    // And the other way round, so the silence above means something: no phone or consent on the
    // account, both at checkout.
    patch_me(
        &scene.app,
        customer,
        json!({"phone": null, "notify_whatsapp": false}),
    )
    .await;
    let (fourth, _) = scene
        .checkout_with(
            customer,
            json!({"phone": OTHER_PHONE, "notify_whatsapp": true}),
        )
        .await;
    scene.reject(fourth, "closing early").await;
    scene.settled(fourth, "order.rejected").await;
    let requests = scene.graph.requests();
    assert_eq!(requests.len(), 1, "{}", scene.graph.describe());
    assert_graph_request(&requests[0], OTHER_DIGITS);
    assert_eq!(requests[0].template(), "mealkitz_order_rejected");
}

async fn window_closed_becomes_template(kind: Db) {
    let scene = Scene::start(kind).await;
    scene.customer_wrote(CUSTOMER_PHONE).await;
    scene.graph.script([GraphAnswer::Error(131_047)]);
    let order = scene.place().await;
    scene.accept(order).await;
    let made = scene.settled(order, "order.accepted").await;
    let requests = scene.graph.requests();
    assert_eq!(
        requests.len(),
        2,
        "the text, then the template:\n{}",
        scene.graph.describe()
    );
    let (text, template) = (&requests[0], &requests[1]);
    assert_graph_request(text, CUSTOMER_DIGITS);
    assert_graph_request(template, CUSTOMER_DIGITS);
    assert_eq!((text.kind(), text.status), ("text", 400));
    assert_eq!((template.kind(), template.status), ("template", 200));
    assert_eq!(template.template(), "mealkitz_order_accepted");
    assert_eq!(
        template.parameters().first(),
        Some(&order_code(order)),
        "the same message"
    );
    assert_eq!(
        text.message_id(),
        template.message_id(),
        "the same message, the same id"
    );
    let stored = made
        .iter()
        .find(|n| n.channel == "whatsapp")
        .expect("the message is listed");
    assert_eq!(stored.state, "sent", "{made:#?}");
    assert_eq!(stored.message_id, template.message_id());
}

async fn refund_in_message(kind: Db) {
    let scene = Scene::start(kind).await;
    scene.customer_wrote(CUSTOMER_PHONE).await;

    // Rejected by the merchant, inside the window: a text with the reason and the money.
    let (rejected, total) = scene.checkout_for(&scene.cast.customer).await;
    scene.reject(rejected, "out of stock").await;
    let made = scene.settled(rejected, "order.rejected").await;
    let ids: BTreeSet<String> = ids_by_event(&made, "whatsapp").into_values().collect();
    let sent = requests_with(&scene.graph.requests(), &ids);
    assert_eq!(sent.len(), 1, "{}", scene.graph.describe());
    let text = sent[0].text();
    assert_eq!(sent[0].kind(), "text", "{}", sent[0].summary());
    for needed in [
        format!("#{}", order_code(rejected)),
        "out of stock".to_owned(),
        money(total),
        "released".to_owned(),
        "not charged".to_owned(),
    ] {
        assert!(text.contains(&needed), "{needed:?} missing from {text:?}");
    }
    payment_becomes(&scene.app, &scene.cast.customer.token, rejected, "voided").await;

    // Cancelled by the customer.
    let (cancelled, total) = scene.checkout_for(&scene.cast.customer).await;
    let reply = scene
        .app
        .post_authed(
            &format!("/api/v1/orders/{cancelled}/cancel"),
            &scene.cast.customer.token,
            &json!({"reason": "changed my mind"}),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let made = scene.settled(cancelled, "order.cancelled").await;
    let ids: BTreeSet<String> = ids_by_event(&made, "whatsapp").into_values().collect();
    let sent = requests_with(&scene.graph.requests(), &ids);
    assert_eq!(sent.len(), 1, "{}", scene.graph.describe());
    let text = sent[0].text();
    assert!(text.contains("cancelled"), "{text}");
    assert!(
        text.contains(&money(total)) && text.contains("released"),
        "{text}"
    );
    payment_becomes(&scene.app, &scene.cast.customer.token, cancelled, "voided").await;

    // Outside the window (another customer, who never wrote): the template carries the amount.
    let other = scene.app.signed_up("customer").await;
    patch_me(
        &scene.app,
        &other,
        json!({"phone": OTHER_PHONE, "notify_whatsapp": true}),
    )
    .await;
    let (theirs, total) = scene.checkout_for(&other).await;
    scene.reject(theirs, "out of stock").await;
    let made = scene.settled(theirs, "order.rejected").await;
    let ids: BTreeSet<String> = ids_by_event(&made, "whatsapp").into_values().collect();
    let sent = requests_with(&scene.graph.requests(), &ids);
    assert_eq!(sent.len(), 1, "{}", scene.graph.describe());
    assert_graph_request(&sent[0], OTHER_DIGITS);
    assert_eq!(sent[0].template(), "mealkitz_order_rejected");
    assert_eq!(
        sent[0].parameters(),
        [order_code(theirs), money(total)],
        "{}",
        sent[0].summary()
    );
}

/// Waits for settlement to move the payment of `order` to `status`.
async fn payment_becomes(app: &TestApp, token: &str, order: OrderId, status: &str) {
    let deadline = Instant::now() + ARRIVES_WITHIN;
    loop {
        let payment = app
            .get_authed(&format!("/api/v1/orders/{order}/payment"), token)
            .await;
        if payment.body["status"] == status {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "payment stayed {}, expected {status}",
            payment.text
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ---- WhatsApp's error codes: rate limits retried, an expired token pauses the channel. ----

#[actix_web::test]
async fn rate_limits_130429_and_131056_are_retried_later_and_each_message_arrives_once_in_order() {
    let scene = Scene::start(Db::Sqlite).await;
    let mut driver = scene.driver().await;
    scene.graph.script([
        GraphAnswer::Error(130_429),
        GraphAnswer::Success,
        GraphAnswer::Error(131_056),
    ]);
    let order = scene.place().await;
    scene.accept(order).await;
    scene.assign(order, &mut driver).await;
    let made = scene.settled(order, "order.driver_assigned").await;
    let ids = ids_by_event(&made, "whatsapp");
    let requests = scene.graph.requests();
    let seen: Vec<(String, u16)> = requests
        .iter()
        .map(|r| (r.template().to_owned(), r.status))
        .collect();
    assert_eq!(
        seen,
        [
            ("mealkitz_order_accepted".to_owned(), 429),
            ("mealkitz_order_accepted".to_owned(), 200),
            ("mealkitz_order_driver_assigned".to_owned(), 400),
            ("mealkitz_order_driver_assigned".to_owned(), 200),
        ],
        "each refused message is sent again, and the next waits for it:\n{}",
        scene.graph.describe()
    );
    assert_eq!(requests[0].message_id(), ids["order.accepted"]);
    assert_eq!(requests[1].message_id(), ids["order.accepted"]);
    assert_eq!(requests[2].message_id(), ids["order.driver_assigned"]);
    assert_eq!(requests[3].message_id(), ids["order.driver_assigned"]);
    for (refused, again) in [(&requests[0], &requests[1]), (&requests[2], &requests[3])] {
        assert_eq!(refused.body, again.body, "the same message again");
        assert!(
            again.at.duration_since(refused.at) >= Duration::from_millis(500),
            "a rate limit is retried later, not at once: {:?}",
            again.at.duration_since(refused.at)
        );
    }
    assert!(
        made.iter()
            .filter(|n| n.channel == "whatsapp")
            .all(|n| n.state == "sent"),
        "{made:#?}"
    );
    let metrics = scene.app.get("/metrics").await.text;
    assert_eq!(
        metric(
            &metrics,
            "notifications_total",
            &[r#"channel="whatsapp""#, r#"outcome="rate_limited""#]
        ),
        Some(2.0),
        "{metrics}"
    );
}

#[actix_web::test]
async fn an_expired_token_190_pauses_the_channel_sends_nothing_more_and_shows_in_metrics() {
    let scene = Scene::start(Db::Sqlite).await;
    let mut driver = scene.driver().await;
    scene.graph.script([GraphAnswer::Error(190)]);
    let order = scene.place().await;
    scene.accept(order).await;
    scene.graph.wait_for(1).await;
    scene.assign(order, &mut driver).await;
    let id = order.to_string();
    scene
        .hooks
        .wait_for_matching("order.driver_assigned", |all| {
            all.iter()
                .any(|h| h.order_id == id && h.event == "order.driver_assigned")
        })
        .await;
    tokio::time::sleep(QUIET).await;
    let requests = scene.graph.requests();
    assert_eq!(
        requests.len(),
        1,
        "nothing is sent while the token is refused:\n{}",
        scene.graph.describe()
    );
    assert_eq!(requests[0].status, 401);
    let made = scene.notifications(order).await;
    let waiting: Vec<&Made> = made.iter().filter(|n| n.channel == "whatsapp").collect();
    assert_eq!(waiting.len(), 2, "both messages are kept: {made:#?}");
    assert!(
        waiting.iter().all(|n| n.state == "pending"),
        "both wait for a new token: {made:#?}"
    );
    let metrics = scene.app.get("/metrics").await.text;
    assert_eq!(
        metric(&metrics, "whatsapp_channel_paused", &[]),
        Some(1.0),
        "the pause shows in the metrics:\n{metrics}"
    );
    assert_eq!(
        metric(
            &metrics,
            "notifications_total",
            &[r#"channel="whatsapp""#, r#"outcome="token_expired""#]
        ),
        Some(1.0),
        "{metrics}"
    );
    let ready = scene.app.get("/ready").await;
    assert_eq!(
        ready.status, 200,
        "a paused channel does not fail readiness"
    );
    assert!(
        ready.text.contains("paused"),
        "/ready says what is degraded: {}",
        ready.text
    );
}

#[actix_web::test]
async fn an_undeliverable_message_is_recorded_as_failed_not_sent_again_and_the_next_one_still_goes()
{
    let scene = Scene::start(Db::Sqlite).await;
    let mut driver = scene.driver().await;
    // 131026: the number cannot receive it. Not a rate limit, not the window: give up on it.
    scene.graph.script([GraphAnswer::Error(131_026)]);
    let order = scene.place().await;
    scene.accept(order).await;
    scene.assign(order, &mut driver).await;
    let made = scene.settled(order, "order.driver_assigned").await;
    let states: BTreeMap<String, String> = made
        .iter()
        .filter(|n| n.channel == "whatsapp")
        .map(|n| (n.event.clone(), n.state.clone()))
        .collect();
    assert_eq!(
        states,
        BTreeMap::from([
            ("order.accepted".to_owned(), "failed".to_owned()),
            ("order.driver_assigned".to_owned(), "sent".to_owned()),
        ]),
        "{made:#?}"
    );
    let requests = scene.graph.requests();
    let seen: Vec<(&str, u16)> = requests.iter().map(|r| (r.template(), r.status)).collect();
    assert_eq!(
        seen,
        [
            ("mealkitz_order_accepted", 400),
            ("mealkitz_order_driver_assigned", 200)
        ],
        "the refused message is not sent again, and does not hold up the next:\n{}",
        scene.graph.describe()
    );
}

// ---- Merchant webhooks: retries, a gone endpoint, signatures and rotation. ----

async fn webhook_retried(kind: Db) {
    let scene = Scene::start(kind).await;
    scene.hooks.script([HookAnswer::status(500)]);
    let order = scene.place().await;
    let hooks = scene
        .hooks
        .wait_for_matching("order.placed answered 200", |all| {
            all.iter().any(|h| h.status == 200)
        })
        .await;
    assert_eq!(hooks.len(), 2, "{}", scene.hooks.describe());
    let (failed, retried) = (&hooks[0], &hooks[1]);
    assert_eq!((failed.status, retried.status), (500, 200));
    assert_eq!(failed.event, "order.placed");
    assert_eq!(failed.order_id, order.to_string());
    assert_eq!(
        failed.id, retried.id,
        "the same webhook-id on every attempt"
    );
    assert!(is_message_id(&failed.id), "{}", failed.id);
    assert!(failed.verified && retried.verified);
    assert_eq!(failed.raw, retried.raw, "the same body on every attempt");

    // The merchant sees both attempts.
    let deadline = Instant::now() + ARRIVES_WITHIN;
    let delivery = loop {
        let deliveries = scene.deliveries(scene.endpoint.id).await;
        assert_eq!(deliveries.len(), 1, "{deliveries:#?}");
        if deliveries[0]["state"] == "sent" {
            break deliveries[0].clone();
        }
        assert!(Instant::now() < deadline, "{deliveries:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(delivery["message_id"], failed.id.as_str());
    assert_eq!(delivery["event"], "order.placed");
    let codes: Vec<&Value> = delivery["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| &a["status_code"])
        .collect();
    assert_eq!(codes, [&json!(500), &json!(200)], "{delivery:#}");

    // A replay sends it again, with the same id.
    let path = format!(
        "{}/{}/deliveries/{}/retry",
        scene.webhooks_path(),
        scene.endpoint.id,
        delivery["id"].as_str().unwrap()
    );
    let replayed = scene
        .app
        .post_authed(&path, &scene.cast.merchant_owner.token, &json!({}))
        .await;
    assert!(replayed.status < 300, "{}", replayed.text);
    let hooks = scene.hooks.wait_for(3).await;
    assert_eq!(hooks[2].id, failed.id, "{}", scene.hooks.describe());
    assert!(hooks[2].verified);
}

async fn webhook_gone(kind: Db) {
    let scene = Scene::start(kind).await;
    let gone = WebhookReceiver::start().await;
    let gone_endpoint = scene.register(&gone.url).await;
    gone.trust(&[&gone_endpoint.secret]);
    gone.script([HookAnswer::status(410)]);

    let order = scene.place().await;
    scene.settled(order, "order.placed").await;
    gone.wait_for(1).await;
    let deadline = Instant::now() + ARRIVES_WITHIN;
    let disabled = loop {
        let listed = scene.listed(gone_endpoint.id).await;
        if !listed["disabled_at"].is_null() {
            break listed;
        }
        assert!(
            Instant::now() < deadline,
            "an endpoint answering 410 is not disabled: {listed:#}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(disabled["disabled_reason"].is_string(), "{disabled:#}");
    assert!(
        scene.listed(scene.endpoint.id).await["disabled_at"].is_null(),
        "the other endpoint stays enabled"
    );

    scene.accept(order).await;
    let second = scene.place().await;
    scene.reject(second, "closing early").await;
    scene.settled(order, "order.accepted").await;
    scene.settled(second, "order.rejected").await;
    tokio::time::sleep(QUIET).await;
    let got = gone.hooks();
    assert_eq!(got.len(), 1, "nothing after 410:\n{}", gone.describe());
    assert_eq!(got[0].event, "order.placed");
    let deliveries = scene.deliveries(gone_endpoint.id).await;
    assert!(
        deliveries
            .iter()
            .all(|d| d["state"] != "sent" && d["event"] == "order.placed"),
        "{deliveries:#?}"
    );
}

async fn signatures_and_rotation(kind: Db) {
    let scene = Scene::start(kind).await;
    let first = scene.place().await;
    scene.accept(first).await;
    scene.settled(first, "order.accepted").await;
    let hooks = scene.hooks.hooks();
    assert_eq!(hooks.len(), 2, "{}", scene.hooks.describe());
    for hook in &hooks {
        assert!(hook.verified, "{}", hook.summary());
        assert!(hook.verifies_with(&scene.endpoint.secret));
        assert!(
            !hook.verifies_with(&new_secret()),
            "another secret does not verify"
        );
        assert_eq!(
            hook.signature.split(' ').count(),
            1,
            "one secret, one signature"
        );
        let mut tampered = hook.clone();
        tampered.raw.push(b' ');
        assert!(
            !tampered.verifies_with(&scene.endpoint.secret),
            "a changed body does not verify"
        );
        let stamp: i64 = hook.timestamp.parse().expect("unix seconds");
        assert!((Utc::now().timestamp() - stamp).abs() < 300, "{stamp}");
        assert_eq!(hook.body["data"]["order"]["id"], first.to_string());
        assert_eq!(
            hook.body["data"]["order"]["merchant_id"],
            scene.cast.merchant_id.to_string()
        );
        assert!(hook.body["timestamp"].as_str().is_some(), "{}", hook.body);
    }
    assert_eq!(hooks[1].body["data"]["order"]["status"], "accepted");

    // Rotated: during the grace period both secrets sign.
    let old = scene.endpoint.secret.clone();
    let rotated = scene
        .app
        .post_authed(
            &format!(
                "{}/{}/rotate-secret",
                scene.webhooks_path(),
                scene.endpoint.id
            ),
            &scene.cast.merchant_owner.token,
            &json!({}),
        )
        .await;
    assert_eq!(rotated.status, 200, "{}", rotated.text);
    let new = rotated.body["secret"].as_str().unwrap().to_owned();
    assert!(new.starts_with("whsec_") && new != old, "{}", rotated.text);
    assert!(
        rotated.body["previous_secret_expires_at"].is_string(),
        "{}",
        rotated.text
    );
    scene.hooks.trust(&[&new]);
    scene.reject(scene.place().await, "closing early").await;
    let all = scene
        .hooks
        .wait_for_matching("order.rejected", |all| {
            all.iter().any(|h| h.event == "order.rejected")
        })
        .await;
    let rejected = all.iter().find(|h| h.event == "order.rejected").unwrap();
    assert!(rejected.verified, "{}", rejected.summary());
    assert_eq!(
        rejected.signature.split(' ').count(),
        2,
        "{}",
        rejected.signature
    );
    assert!(rejected.verifies_with(&new), "the new secret verifies");
    assert!(
        rejected.verifies_with(&old),
        "the old secret verifies during the grace period"
    );

    // Once the grace period is over (ended here in the store rather than waited for), only the
    // newest secret signs.
    let newest = new_secret();
    scene
        .store
        .rotate_webhook_secret(
            scene.endpoint.id,
            &newest,
            Utc::now() - chrono::Duration::seconds(1),
        )
        .await
        .unwrap()
        .expect("rotated");
    let last = scene.place().await;
    let after = scene
        .hooks
        .wait_for_matching("the last order.placed", |all| {
            all.iter().any(|h| h.order_id == last.to_string())
        })
        .await;
    let placed = after
        .iter()
        .find(|h| h.order_id == last.to_string())
        .unwrap();
    assert!(placed.verifies_with(&newest));
    assert!(!placed.verifies_with(&new), "the grace period is over");
    assert!(!placed.verifies_with(&old));
}

#[actix_web::test]
async fn an_endpoint_asking_to_retry_after_a_while_is_not_called_again_before_it() {
    let scene = Scene::start(Db::Sqlite).await;
    scene.hooks.script([HookAnswer::retry_after(503, 8)]);
    scene.place().await;
    let hooks = scene
        .hooks
        .wait_for_matching("the retry answered 200", |all| {
            all.iter().any(|h| h.status == 200)
        })
        .await;
    assert_eq!(hooks.len(), 2, "{}", scene.hooks.describe());
    assert_eq!(hooks[0].id, hooks[1].id);
    let waited = hooks[1].at.duration_since(hooks[0].at);
    assert!(
        waited >= Duration::from_millis(7_500),
        "Retry-After: 8 asks for longer than the schedule's 5 s; retried after {waited:?}"
    );
}

#[actix_web::test]
async fn an_endpoint_that_does_not_answer_within_15_s_is_given_up_on_and_retried_with_the_same_id()
{
    let scene = Scene::start(Db::Sqlite).await;
    scene
        .hooks
        .script([HookAnswer::hang(Duration::from_secs(120))]);
    let order = scene.place().await;
    let hooks = scene
        .hooks
        .wait_for_matching("a second attempt", |all| all.len() >= 2)
        .await;
    assert_eq!(hooks[0].id, hooks[1].id, "{}", scene.hooks.describe());
    let waited = hooks[1].at.duration_since(hooks[0].at);
    assert!(
        waited >= Duration::from_secs(15) && waited < Duration::from_secs(120),
        "the first attempt is abandoned after 15 s (and retried 5 s later), not waited out: {waited:?}"
    );
    scene.settled(order, "order.placed").await;
    let deliveries = scene.deliveries(scene.endpoint.id).await;
    let attempts = deliveries[0]["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{deliveries:#?}");
    assert!(attempts[0]["status_code"].is_null(), "{deliveries:#?}");
    assert!(
        attempts[0]["latency_ms"].as_i64().unwrap() >= 14_000,
        "{deliveries:#?}"
    );
    assert_eq!(attempts[1]["status_code"], 200, "{deliveries:#?}");
}

// ---- Processes: a SIGKILL mid-send, and two replicas. ----

/// Seconds a process holds a message it is sending before another may send it.
const CLAIM_SECS: u64 = 2;

/// `mealkitz serve` processes on one PostgreSQL database (and Redis when there are several),
/// sending to the stand-ins. Dropping it kills them (printing their logs if the test failed).
struct Fleet {
    processes: Processes,
}

impl Fleet {
    async fn start(count: usize, graph: &GraphApi) -> Fleet {
        let settings = vec![
            ("MEALKITZ_WHATSAPP_API_URL", graph.url.clone()),
            ("MEALKITZ_WHATSAPP_API_VERSION", API_VERSION.to_owned()),
            (
                "MEALKITZ_WHATSAPP_PHONE_NUMBER_ID",
                PHONE_NUMBER_ID.to_owned(),
            ),
            ("MEALKITZ_WHATSAPP_TOKEN", ACCESS_TOKEN.to_owned()),
            ("MEALKITZ_WEBHOOK_ALLOW_PRIVATE", "true".to_owned()),
            ("MEALKITZ_PUBLIC_URL", PUBLIC_URL.to_owned()),
            ("MEALKITZ_NOTIFIER_CLAIM_SECS", CLAIM_SECS.to_string()),
        ];
        let mut processes = Processes::new(count > 1, settings).await;
        // Migrated before any process starts, so the test can read it at once.
        migrated_store(processes.db()).await.close().await;
        processes.start(count).await;
        Fleet { processes }
    }

    /// A merchant with a menu, south-west of the centre.
    async fn open_shop(&self) -> Shop {
        self.processes.open_shop(0, -5_000.0, -5_000.0).await
    }

    /// Checks out an order of `shop` for `customer` through process `via`.
    async fn checkout(&self, via: usize, customer: &Session, shop: &Shop) -> OrderId {
        let placed = self.processes.checkout(via, customer, shop).await;
        placed["id"].as_str().unwrap().parse().unwrap()
    }

    /// The customer cancels `order` through process `via`.
    async fn cancel(&self, via: usize, customer: &Session, order: OrderId) {
        let cancelled = self
            .processes
            .rest(
                via,
                "POST",
                &format!("/api/v1/orders/{order}/cancel"),
                Some(&customer.token),
                &[],
                Some(&json!({"reason": "changed my mind"})),
            )
            .await;
        assert_eq!(cancelled.status, 200, "{}", cancelled.text);
    }

    /// Registers an endpoint of `shop` at `url` for `events`.
    async fn register(&self, shop: &Shop, url: &str, events: &[&str]) -> Endpoint {
        registered(
            &self
                .processes
                .rest(
                    0,
                    "POST",
                    &format!("/api/v1/merchants/{}/webhooks", shop.merchant_id),
                    Some(&shop.owner.token),
                    &[],
                    Some(&webhook_body(url, events)),
                )
                .await,
        )
    }

    /// Gives `who` the customer's phone and consent (`PATCH /api/v1/me`).
    async fn agree(&self, who: &Session) {
        let reply = self
            .processes
            .rest(
                0,
                "PATCH",
                "/api/v1/me",
                Some(&who.token),
                &[],
                Some(&json!({"phone": CUSTOMER_PHONE, "notify_whatsapp": true})),
            )
            .await;
        assert_eq!(reply.status, 200, "{}", reply.text);
    }

    /// Polls `GET /api/v1/orders/{order}/notifications` (as `who`) until nothing is pending;
    /// what was made about the order.
    async fn settled(&self, who: &Session, order: OrderId) -> Vec<Made> {
        let deadline = Instant::now() + ARRIVES_WITHIN;
        loop {
            let made = made_of(
                &self
                    .processes
                    .rest(
                        0,
                        "GET",
                        &format!("/api/v1/orders/{order}/notifications"),
                        Some(&who.token),
                        &[],
                        None,
                    )
                    .await,
            );
            if !made.is_empty() && made.iter().all(|n| n.state != "pending") {
                return made;
            }
            assert!(
                Instant::now() < deadline,
                "notifications of order {order} still pending after {ARRIVES_WITHIN:?}: {made:#?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Who holds the claim of `order`'s WhatsApp message, if anyone.
    async fn whatsapp_claimed_by(&self, order: OrderId) -> Option<String> {
        let row: Option<(Option<String>,)> = sqlx::query_as(
            "SELECT claimed_by FROM notifications WHERE order_id = $1 AND channel = 'whatsapp'",
        )
        .bind(order.as_uuid())
        .fetch_optional(self.processes.pool())
        .await
        .unwrap();
        row.and_then(|(owner,)| owner)
    }
}

#[actix_web::test]
async fn a_sigkill_between_the_journal_commit_and_the_send_loses_nothing_and_the_message_keeps_its_id()
 {
    let graph = GraphApi::start().await;
    let hooks = WebhookReceiver::start().await;
    let mut fleet = Fleet::start(1, &graph).await;
    let shop = fleet.open_shop().await;
    let endpoint = fleet
        .register(&shop, &hooks.url, &["order.cancelled"])
        .await;
    hooks.trust(&[&endpoint.secret]);
    let customer = fleet.processes.sign_up(0, "customer").await;
    fleet.agree(&customer).await;

    // The Graph API and the merchant take the first request and do not answer: the
    // cancellation is journaled, and its messages are on their way when the process dies.
    graph.script([GraphAnswer::Hang(Duration::from_secs(60))]);
    hooks.script([HookAnswer::hang(Duration::from_secs(60))]);
    let order = fleet.checkout(0, &customer, &shop).await;
    fleet.cancel(0, &customer, order).await;
    let in_flight = graph.wait_for(1).await;
    // The webhook may be on its way too (if the notifier sends both at once); give it a moment.
    let deadline = Instant::now() + Duration::from_secs(2);
    while hooks.hooks().is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let webhook_was_in_flight = !hooks.hooks().is_empty();
    fleet.processes.kill(0);
    let killed_at = Instant::now();
    hooks.clear_script();

    fleet.processes.add().await;
    let requests = graph
        .wait_for_matching("the message answered 200 after the restart", |all| {
            all.iter().any(|r| r.status == 200 && r.at > killed_at)
        })
        .await;
    let delivered = hooks
        .wait_for_matching("order.cancelled answered 200 after the restart", |all| {
            all.iter().any(|h| h.status == 200 && h.at > killed_at)
        })
        .await;
    let made = fleet.settled(&customer, order).await;
    let id = ids_by_event(&made, "whatsapp")
        .remove("order.cancelled")
        .expect("the cancellation's WhatsApp message is listed");
    assert_eq!(in_flight[0].message_id(), id);
    for request in &requests {
        assert_eq!(
            request.message_id(),
            id,
            "one message, one id:\n{}",
            graph.describe()
        );
        assert_eq!(request.body, in_flight[0].body, "the same message again");
    }
    assert_eq!(
        requests
            .iter()
            .filter(|r| r.status == 200 && !r.hung)
            .count(),
        1,
        "answered once after the restart:\n{}",
        graph.describe()
    );
    for hook in &delivered {
        assert_eq!(hook.event, "order.cancelled");
        assert_eq!(
            hook.id,
            id,
            "the webhook carries the same id (webhook in flight at the kill: {webhook_was_in_flight}):\n{}",
            hooks.describe()
        );
        assert!(hook.verified, "{}", hook.summary());
        assert_eq!(hook.raw, delivered[0].raw, "the same body on every attempt");
    }
    assert!(
        made.iter().all(|n| n.state == "sent"),
        "everything sent after the restart: {made:#?}"
    );
}

#[actix_web::test]
async fn two_replicas_send_each_message_once_and_a_killed_senders_claims_are_sent_by_the_other() {
    const ORDERS: usize = 6;
    let graph = GraphApi::start().await;
    let hooks = WebhookReceiver::start().await;
    let mut fleet = Fleet::start(2, &graph).await;
    let shop = fleet.open_shop().await;
    let endpoint = fleet.register(&shop, &hooks.url, &all_events()).await;
    hooks.trust(&[&endpoint.secret]);
    let customer = fleet.processes.sign_up(1, "customer").await;
    fleet.agree(&customer).await;

    // Orders placed and cancelled through either replica.
    let mut orders = Vec::new();
    for n in 0..ORDERS {
        let order = fleet.checkout(n, &customer, &shop).await;
        fleet.cancel(n + 1, &customer, order).await;
        orders.push(order);
    }
    let mut expected_ids = BTreeMap::new();
    for &order in &orders {
        let id = order.to_string();
        hooks
            .wait_for_matching(&format!("order.cancelled of {id}"), |all| {
                all.iter()
                    .any(|h| h.order_id == id && h.event == "order.cancelled" && h.status < 300)
            })
            .await;
        let made = fleet.settled(&customer, order).await;
        for n in &made {
            assert_eq!(n.state, "sent", "{made:#?}");
            expected_ids.insert(
                (n.channel.clone(), order, n.event.clone()),
                n.message_id.clone(),
            );
        }
        assert!(
            made.iter()
                .any(|n| n.channel == "whatsapp" && n.event == "order.cancelled"),
            "{made:#?}"
        );
    }
    assert_once_each(&graph, &hooks, &expected_ids);

    // A replica dies while sending: the Graph API holds its request; the other replica sends
    // the message once the claim lapses.
    graph.script([GraphAnswer::Hang(Duration::from_secs(60))]);
    let order = fleet.checkout(0, &customer, &shop).await;
    let before = graph.requests().len();
    fleet.cancel(1, &customer, order).await;
    graph.wait_for(before + 1).await;
    let deadline = Instant::now() + ARRIVES_WITHIN;
    let sender = loop {
        if let Some(owner) = fleet.whatsapp_claimed_by(order).await
            && let Some(process) = fleet.processes.process_of(&owner)
        {
            break process;
        }
        assert!(
            Instant::now() < deadline,
            "no live replica holds the claim of the message in flight (claimed by {:?}; nodes {:?})",
            fleet.whatsapp_claimed_by(order).await,
            fleet.processes.nodes()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    fleet.processes.kill(sender);
    let killed_at = Instant::now();
    graph
        .wait_for_matching("the message sent again by the other replica", |all| {
            all.iter().any(|r| r.at > killed_at && r.status == 200)
        })
        .await;
    let made = fleet.settled(&customer, order).await;
    assert!(made.iter().all(|n| n.state == "sent"), "{made:#?}");
    let id = &made
        .iter()
        .find(|n| n.channel == "whatsapp")
        .expect("the cancellation's message")
        .message_id;
    let all = graph.requests();
    let again = &all[before..];
    assert!(
        again.iter().all(|r| r.message_id() == id),
        "the same id on both replicas' attempts:\n{}",
        graph.describe()
    );
    for n in &made {
        expected_ids.insert(
            (n.channel.clone(), order, n.event.clone()),
            n.message_id.clone(),
        );
    }
    hooks
        .wait_for_matching("order.cancelled of the last order", |all| {
            all.iter()
                .any(|h| h.order_id == order.to_string() && h.event == "order.cancelled")
        })
        .await;
    assert_once_each(&graph, &hooks, &expected_ids);
}

/// Every message was received with its one id: no (order, event) got two different ids on a
/// channel, and a message received twice carried the same id both times.
fn assert_once_each(
    graph: &GraphApi,
    hooks: &WebhookReceiver,
    expected: &BTreeMap<(String, OrderId, String), String>,
) {
    let graph_ids: BTreeSet<String> = graph
        .requests()
        .iter()
        .map(|r| r.message_id().to_owned())
        .collect();
    let mut webhook_ids: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for hook in hooks.hooks() {
        assert!(hook.verified, "{}", hook.summary());
        webhook_ids
            .entry((hook.order_id.clone(), hook.event.clone()))
            .or_default()
            .insert(hook.id.clone());
    }
    for ((channel, order, event), id) in expected {
        match channel.as_str() {
            "whatsapp" => assert!(
                graph_ids.contains(id),
                "{event} of {order} never reached WhatsApp:\n{}",
                graph.describe()
            ),
            _ => assert_eq!(
                webhook_ids.get(&(order.to_string(), event.clone())),
                Some(&BTreeSet::from([id.clone()])),
                "{event} of {order} reached the merchant once, or again with the same id:\n{}",
                hooks.describe()
            ),
        }
    }
    let known: BTreeSet<&String> = expected.values().collect();
    for id in &graph_ids {
        assert!(
            known.contains(id),
            "WhatsApp got a message nobody stored: {id}\n{}",
            graph.describe()
        );
    }
    // One WhatsApp message per cancellation: as many distinct ids as cancelled orders.
    let whatsapp_expected = expected.keys().filter(|(c, _, _)| *c == "whatsapp").count();
    assert_eq!(graph_ids.len(), whatsapp_expected, "{}", graph.describe());
}
