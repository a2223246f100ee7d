//! Ordering over WhatsApp (issue 17): a customer who only ever talks to the bot — signed webhook
//! POSTs in, the bot's messages out to a Graph API stand-in that records them — goes from "hi"
//! through location, kitchen, dish, quantity and basket to a payment link, pays it, and then
//! hears from the notification service as the order moves. A redelivered message acts once; the
//! conversation survives a restart; `status`, `cancel`, unreadable messages and idleness are
//! answered; the number becomes a customer account that owns the order.

use std::time::Duration;

use mealkitz::actors::commands::{self, AnswerOffer, MerchantAccept, MerchantReady};
use mealkitz::config::notify::WhatsAppAccount;
use mealkitz::config::{Config, Secret};
use mealkitz::domain::notification::order_code;
use mealkitz::domain::{MerchantId, OrderId, Phone, Position};
use mealkitz::store::{ConversationSave, Store};
use serde_json::{Value, json};

use crate::helpers::{
    Db, TestApp, TestDb, each_backend, migrated_store, next_offer, offset_m, spawn_app_with, start,
    test_config,
};
use crate::notify_support::{ACCESS_TOKEN, API_VERSION, GraphApi, GraphRequest, PHONE_NUMBER_ID};
use crate::processes::Processes;
use crate::webhooks_api::count_rows;
use crate::ws::cast;

const APP_SECRET: &str = "meta-app-secret-for-conversations";
const PUBLIC_URL: &str = "http://localhost:8000";
/// How long a test watches for a message that must not come.
const QUIET: Duration = Duration::from_secs(2);
const OFFER_WITHIN: Duration = Duration::from_secs(10);

fn chat_config(db: &TestDb, graph: &GraphApi) -> Config {
    let mut config = test_config(db);
    config.notify.whatsapp_api_url = graph.url.clone();
    config.notify.whatsapp_api_version = API_VERSION.to_owned();
    config.notify.whatsapp = Some(WhatsAppAccount {
        phone_number_id: PHONE_NUMBER_ID.to_owned(),
        token: Secret::new(ACCESS_TOKEN),
    });
    config.notify.whatsapp_app_secret = Some(Secret::new(APP_SECRET));
    config.notify.public_url = PUBLIC_URL.to_owned();
    config
}

fn signature(body: &[u8]) -> String {
    crate::whatsapp_webhook::signature(body, APP_SECRET)
}

/// A person on WhatsApp: their number, and how many of the bot's messages to them were read.
struct Person {
    digits: String,
    name: String,
    sent: usize,
    read: usize,
}

impl Person {
    fn new(digits: &str, name: &str) -> Person {
        Person {
            digits: digits.to_owned(),
            name: name.to_owned(),
            sent: 0,
            read: 0,
        }
    }

    fn phone(&self) -> Phone {
        Phone::parse(&format!("+{}", self.digits)).unwrap()
    }

    /// Meta's envelope around one message object from this person (`wamid` and timestamp set).
    fn envelope(&mut self, message: Value) -> (String, Vec<u8>) {
        self.sent += 1;
        let wamid = format!("wamid.TEST{}{}", self.digits, self.sent);
        let mut message = message;
        message["from"] = json!(self.digits);
        message["id"] = json!(wamid);
        message["timestamp"] = json!(chrono::Utc::now().timestamp().to_string());
        let body = json!({
            "object": "whatsapp_business_account",
            "entry": [{"id": "102290129340398", "changes": [{"field": "messages", "value": {
                "messaging_product": "whatsapp",
                "metadata": {"display_phone_number": "15550783881", "phone_number_id": PHONE_NUMBER_ID},
                "contacts": [{"profile": {"name": self.name}, "wa_id": self.digits}],
                "messages": [message],
            }}]}]
        });
        (wamid, serde_json::to_vec(&body).unwrap())
    }
}

struct Scene {
    app: TestApp,
    store: Store,
    graph: GraphApi,
    /// The kitchen the scene's customers order from, and where it is.
    kitchen: MerchantId,
    pickup: Position,
}

async fn post_signed(app: &TestApp, body: &[u8]) -> u16 {
    post_signed_to(&app.address, body).await
}

impl Scene {
    async fn start(kind: Db) -> Scene {
        let graph = GraphApi::start().await;
        let db = TestDb::create(kind).await;
        let config = chat_config(&db, &graph);
        let app = spawn_app_with(db, config).await;
        Scene::around(app, graph).await
    }

    async fn around(app: TestApp, graph: GraphApi) -> Scene {
        let store = migrated_store(&app.db).await;
        let cast = cast(&app, crate::helpers::at(-5_000.0, -5_000.0)).await;
        Scene {
            app,
            store,
            graph,
            kitchen: cast.merchant_id,
            pickup: cast.pickup,
        }
    }

    /// A place 800 m from the kitchen: inside the delivery distance.
    fn home(&self) -> Position {
        offset_m(self.pickup, 800.0, 0.0)
    }

    /// Sends one message object from `who`, signed; the `wamid` and body (for redelivery).
    async fn send(&self, who: &mut Person, message: Value) -> (String, Vec<u8>) {
        let (wamid, body) = who.envelope(message);
        assert_eq!(post_signed(&self.app, &body).await, 200);
        (wamid, body)
    }

    async fn say(&self, who: &mut Person, text: &str) {
        self.send(who, json!({"type": "text", "text": {"body": text}}))
            .await;
    }

    async fn tap(&self, who: &mut Person, id: &str) {
        self.send(who, tap(id)).await;
    }

    async fn share_location(&self, who: &mut Person, at: Position) {
        self.send(
            who,
            json!({"type": "location", "location": {"latitude": at.lat, "longitude": at.lon}}),
        )
        .await;
    }

    /// Every message sent to `who` so far.
    fn to(&self, who: &Person) -> Vec<GraphRequest> {
        self.graph
            .requests()
            .into_iter()
            .filter(|r| r.to() == who.digits)
            .collect()
    }

    /// Waits for the next message to `who` that `wanted` accepts, marking everything before it
    /// read; panics with the conversation if none comes.
    async fn expect(
        &self,
        who: &mut Person,
        what: &str,
        wanted: impl Fn(&GraphRequest) -> bool,
    ) -> GraphRequest {
        expect_on(&self.graph, who, what, wanted).await
    }

    /// `who` says `hello`; the bot greets them and asks where to deliver.
    async fn greeted(&self, who: &mut Person, hello: &str) -> GraphRequest {
        self.say(who, hello).await;
        self.expect(who, "the greeting", |r| {
            interactive(r, "location_request_message")
        })
        .await
    }

    /// Waits [`QUIET`] and checks that nothing more came to `who`.
    async fn expect_nothing_more(&self, who: &Person) {
        tokio::time::sleep(QUIET).await;
        let extra: Vec<String> = self.to(who)[who.read..]
            .iter()
            .map(GraphRequest::summary)
            .collect();
        assert!(extra.is_empty(), "nothing more was to come: {extra:#?}");
    }
}

/// Waits for the next message to `who` at `graph` that `wanted` accepts, marking everything
/// before it read; panics with the conversation if none comes.
async fn expect_on(
    graph: &GraphApi,
    who: &mut Person,
    what: &str,
    wanted: impl Fn(&GraphRequest) -> bool,
) -> GraphRequest {
    let from = who.read;
    let digits = who.digits.clone();
    let all = graph
        .wait_for_matching(what, |all| {
            all.iter()
                .filter(|r| r.to() == digits)
                .skip(from)
                .any(&wanted)
        })
        .await;
    let mine: Vec<&GraphRequest> = all.iter().filter(|r| r.to() == digits).collect();
    let at = from
        + mine[from..]
            .iter()
            .position(|r| wanted(r))
            .expect("matched above");
    who.read = at + 1;
    mine[at].clone()
}

async fn post_signed_to(address: &str, body: &[u8]) -> u16 {
    reqwest::Client::new()
        .post(format!("{address}/webhooks/whatsapp"))
        .header("content-type", "application/json")
        .header("X-Hub-Signature-256", signature(body))
        .body(body.to_vec())
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// The message object of a tap on the list row or reply button `id` (rows are kitchens and
/// dishes; the rest are buttons).
fn tap(id: &str) -> Value {
    let kind = if id.starts_with("kitchen:") || id.starts_with("dish:") {
        "list_reply"
    } else {
        "button_reply"
    };
    json!({"type": "interactive", "interactive": {"type": kind, kind: {"id": id, "title": id}}})
}

fn body_text(request: &GraphRequest) -> String {
    let body = &request.body;
    [
        body["text"]["body"].as_str(),
        body["interactive"]["body"]["text"].as_str(),
    ]
    .into_iter()
    .flatten()
    .collect::<Vec<_>>()
    .join(" ")
}

fn interactive(request: &GraphRequest, kind: &str) -> bool {
    request.body["interactive"]["type"] == kind
}

fn list_ids(request: &GraphRequest) -> Vec<String> {
    request.body["interactive"]["action"]["sections"][0]["rows"]
        .as_array()
        .map(|rows| {
            rows.iter()
                .map(|r| r["id"].as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn button_ids(request: &GraphRequest) -> Vec<String> {
    request.body["interactive"]["action"]["buttons"]
        .as_array()
        .map(|buttons| {
            buttons
                .iter()
                .map(|b| b["reply"]["id"].as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The token of the first payment link in `text`.
fn pay_token(text: &str) -> Option<String> {
    let start = text.find("/pay/")? + "/pay/".len();
    Some(
        text[start..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
            .collect(),
    )
}

/// Takes `who` from "hi" to the payment link; the link's token.
async fn order_up_to_the_link(scene: &Scene, who: &mut Person) -> String {
    let ask = scene.greeted(who, "hi").await;
    assert!(
        body_text(&ask).contains(&format!("Hi {}!", who.name.split(' ').next().unwrap())),
        "{}",
        ask.summary()
    );
    scene.share_location(who, scene.home()).await;
    let kitchens = scene
        .expect(who, "the kitchens list", |r| interactive(r, "list"))
        .await;
    let kitchen = format!("kitchen:{}", scene.kitchen);
    assert!(
        list_ids(&kitchens).contains(&kitchen),
        "{:?}",
        kitchens.body
    );
    scene.tap(who, &kitchen).await;
    let menu = scene
        .expect(who, "the menu", |r| {
            interactive(r, "list") && body_text(r).contains("menu")
        })
        .await;
    let dish = list_ids(&menu)
        .into_iter()
        .find(|id| id.starts_with("dish:"))
        .expect("a dish on the menu");
    scene.tap(who, &dish).await;
    let how_many = scene
        .expect(who, "the quantity buttons", |r| interactive(r, "button"))
        .await;
    assert_eq!(button_ids(&how_many), ["qty:1", "qty:2", "qty:3"]);
    scene.tap(who, "qty:2").await;
    let basket = scene
        .expect(who, "the basket", |r| {
            interactive(r, "button") && body_text(r).contains("Your basket")
        })
        .await;
    assert_eq!(
        button_ids(&basket),
        ["basket:checkout", "basket:add", "basket:cancel"]
    );
    assert!(body_text(&basket).contains("2 ×"), "{}", body_text(&basket));
    scene.tap(who, "basket:checkout").await;
    let link = scene
        .expect(who, "the payment link", |r| body_text(r).contains("/pay/"))
        .await;
    let text = body_text(&link);
    assert!(text.contains(&format!("{PUBLIC_URL}/pay/")), "{text}");
    assert!(text.contains("Total $"), "{text}");
    pay_token(&text).expect("a token in the link")
}

/// Pays the link with `method`: the status and body.
async fn pay(scene: &Scene, token: &str, method: &str) -> (u16, Value) {
    let reply = scene
        .app
        .post_json(
            &format!("/api/v1/pay/{token}"),
            &json!({"payment_method": method}),
        )
        .await;
    (reply.status, reply.body)
}

async fn a_whole_order_over_whatsapp_from_hi_to_delivered(kind: Db) {
    let scene = Scene::start(kind).await;
    let mut aino = Person::new("358401110001", "Aino Virtanen");
    let token = order_up_to_the_link(&scene, &mut aino).await;

    let (status, order) = pay(&scene, &token, "pm_card_visa").await;
    assert_eq!(status, 201, "{order}");
    let order_id: OrderId = order["id"].as_str().unwrap().parse().unwrap();
    let code = order_code(order_id);
    let placed = scene
        .expect(&mut aino, "the order placed", |r| {
            body_text(r).contains(&format!("Order #{code} placed"))
        })
        .await;
    // The tracking link signs the customer in: the order is theirs over REST.
    let text = body_text(&placed);
    let fragment = text
        .split(&format!("{PUBLIC_URL}/track/{order_id}#token="))
        .nth(1)
        .expect("a tracking link with a sign-in token");
    let customer_token: String = fragment.split_whitespace().next().unwrap().to_owned();
    let seen = scene
        .app
        .get_authed(&format!("/api/v1/orders/{order_id}"), &customer_token)
        .await;
    assert_eq!(seen.status, 200, "{}", seen.text);
    let me = scene.app.get_authed("/api/v1/me", &customer_token).await;
    assert_eq!(me.body["phone"], "+358401110001", "{}", me.text);
    assert_eq!(me.body["name"], "Aino Virtanen");
    assert_eq!(me.body["role"], "customer");
    assert_eq!(seen.body["customer_id"], me.body["id"], "{}", seen.text);
    // The link is spent.
    let (again, body) = pay(&scene, &token, "pm_card_visa").await;
    assert_eq!(again, 410, "{body}");
    assert_eq!(body["error"]["code"], "pay_link_used");

    // "status" answers from the order as it is.
    scene.say(&mut aino, "status").await;
    let status = scene
        .expect(&mut aino, "the status", |r| {
            body_text(r).contains("is waiting for the kitchen")
        })
        .await;
    assert!(body_text(&status).contains(&code));

    // From here on the notification service speaks.
    let mut driver = scene
        .app
        .driver_at(offset_m(scene.pickup, -300.0, 0.0))
        .await;
    scene
        .app
        .engine
        .execute(MerchantAccept {
            merchant_id: scene.kitchen,
            order_id,
            prep_minutes: 10,
        })
        .await
        .expect("accepted");
    scene
        .expect(&mut aino, "accepted", |r| body_text(r).contains("accepted"))
        .await;
    let offer = next_offer(&mut driver, OFFER_WITHIN)
        .await
        .expect("an offer");
    scene
        .app
        .engine
        .execute(AnswerOffer {
            driver: driver.id,
            offer_id: offer.offer_id,
            accept: true,
        })
        .await
        .expect("answered")
        .expect("assigned");
    scene
        .expect(&mut aino, "a driver assigned", |r| {
            body_text(r).contains("on the way to pick up")
        })
        .await;
    scene
        .app
        .engine
        .execute(MerchantReady {
            merchant_id: scene.kitchen,
            order_id,
        })
        .await
        .expect("ready");
    scene
        .app
        .engine
        .execute(commands::PickedUp {
            driver: driver.id,
            order_id,
        })
        .await
        .expect("picked up");
    scene
        .app
        .engine
        .execute(commands::Delivered {
            driver: driver.id,
            order_id,
        })
        .await
        .expect("delivered");
    scene
        .expect(&mut aino, "delivered", |r| {
            body_text(r).contains("was delivered")
        })
        .await;
    // One account for the number, one order, one authorisation.
    assert_eq!(
        count_rows(&scene.app.db, "users WHERE phone = '+358401110001'").await,
        1
    );
    assert_eq!(count_rows(&scene.app.db, "orders").await, 1);
    assert_eq!(count_rows(&scene.app.db, "payments").await, 1);
}

async fn a_redelivered_message_acts_once_and_unreadable_ones_get_help(kind: Db) {
    let scene = Scene::start(kind).await;
    let mut eero = Person::new("358401110002", "Eero");
    let (wamid, body) = scene
        .send(&mut eero, json!({"type": "text", "text": {"body": "hi"}}))
        .await;
    scene
        .expect(&mut eero, "the greeting", |r| {
            interactive(r, "location_request_message")
        })
        .await;
    // Meta delivers the same message again, twice.
    assert_eq!(post_signed(&scene.app, &body).await, 200);
    assert_eq!(post_signed(&scene.app, &body).await, 200);
    scene.expect_nothing_more(&eero).await;
    assert_eq!(
        count_rows(
            &scene.app.db,
            &format!("whatsapp_inbox WHERE id = '{wamid}'")
        )
        .await,
        1
    );
    // A photo: a polite answer and the help.
    scene
        .send(
            &mut eero,
            json!({"type": "image", "image": {"id": "1", "mime_type": "image/jpeg"}}),
        )
        .await;
    let sorry = scene
        .expect(&mut eero, "the apology", |r| {
            body_text(r).contains("can't read image")
        })
        .await;
    assert!(body_text(&sorry).contains("*status*"), "the help follows");
    // A stale button: where we are, asked again.
    scene.tap(&mut eero, "qty:2").await;
    scene
        .expect(&mut eero, "the current question again", |r| {
            interactive(r, "location_request_message")
        })
        .await;
}

#[actix_web::test]
async fn a_typed_address_is_looked_up_or_the_pin_asked_for_without_map_data() {
    let scene = Scene::start(Db::Sqlite).await;
    let mut liisa = Person::new("358401110003", "Liisa");
    scene.greeted(&mut liisa, "hello").await;
    scene.say(&mut liisa, "Mannerheimintie 5, Helsinki").await;
    // The test engine loads no address data: the bot asks for a pin instead of guessing.
    let ask = scene
        .expect(&mut liisa, "a request for the pin", |r| {
            interactive(r, "location_request_message")
        })
        .await;
    assert!(
        body_text(&ask).contains("can't look up typed addresses"),
        "{}",
        body_text(&ask)
    );
    // Far outside the service area: no kitchen.
    scene
        .share_location(&mut liisa, Position { lat: 0.5, lon: 0.5 })
        .await;
    scene
        .expect(&mut liisa, "no kitchen there", |r| {
            body_text(r).contains("no open kitchen")
        })
        .await;
}

#[actix_web::test]
async fn the_conversation_survives_a_restart_mid_order() {
    let graph = GraphApi::start().await;
    let db = TestDb::create(Db::Postgres).await;
    let config = chat_config(&db, &graph);
    let app = spawn_app_with(db, config.clone()).await;
    let scene = Scene::around(app, graph).await;
    let mut minna = Person::new("358401110004", "Minna");
    scene.greeted(&mut minna, "hi").await;
    scene.share_location(&mut minna, scene.home()).await;
    scene
        .expect(&mut minna, "the kitchens list", |r| interactive(r, "list"))
        .await;
    let Scene {
        app,
        graph,
        kitchen,
        pickup,
        ..
    } = scene;
    let db = app.stop().await;
    let app = start(db, config).await;
    app.wait_until_ready().await;
    let store = migrated_store(&app.db).await;
    let scene = Scene {
        app,
        store,
        graph,
        kitchen,
        pickup,
    };
    scene
        .tap(&mut minna, &format!("kitchen:{}", scene.kitchen))
        .await;
    scene
        .expect(&mut minna, "the menu after the restart", |r| {
            interactive(r, "list") && body_text(r).contains("menu")
        })
        .await;
}

#[actix_web::test]
async fn cancel_before_the_kitchen_accepts_releases_the_hold() {
    let scene = Scene::start(Db::Postgres).await;
    let mut olli = Person::new("358401110005", "Olli");
    let token = order_up_to_the_link(&scene, &mut olli).await;
    // A declined card first: the link stays usable for another card.
    let (declined, body) = pay(&scene, &token, "pm_card_chargeDeclined").await;
    assert_eq!(declined, 402, "{body}");
    let (status, order) = pay(&scene, &token, "pm_card_visa").await;
    assert_eq!(status, 201, "{order}");
    let order_id: OrderId = order["id"].as_str().unwrap().parse().unwrap();
    let code = order_code(order_id);
    scene
        .expect(&mut olli, "placed", |r| body_text(r).contains("placed"))
        .await;
    scene.say(&mut olli, "cancel").await;
    // The bot's answer, and the notification service's message of what was released, in
    // whichever order they come.
    let digits = olli.digits.clone();
    scene
        .graph
        .wait_for_matching("the cancellation and its refund message", |all| {
            let mine: Vec<String> = all
                .iter()
                .filter(|r| r.to() == digits)
                .map(body_text)
                .collect();
            mine.iter()
                .any(|t| t.contains(&format!("Order #{code} is cancelled")))
                && mine.iter().any(|t| {
                    t.contains(&format!("order #{code} was cancelled"))
                        && t.contains("held on your card is released")
                })
        })
        .await;
    let loaded = scene.store.load_order(order_id).await.unwrap().unwrap();
    assert_eq!(loaded.status().as_str(), "cancelled");
}

#[actix_web::test]
async fn an_idle_conversation_is_reset_with_a_note() {
    let scene = Scene::start(Db::Sqlite).await;
    let mut pia = Person::new("358401110006", "Pia");
    scene.greeted(&mut pia, "hi").await;
    // Thirty-one minutes pass: the conversation's last message is moved back.
    let phone = pia.phone();
    // The chat worker may hold the conversation at this instant (it claims it for each round):
    // the test takes it between two rounds.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let (now, record) = loop {
        let now = chrono::Utc::now();
        let claimed = scene
            .store
            .claim_conversation(
                phone.as_str(),
                "test",
                now,
                now + chrono::Duration::seconds(30),
            )
            .await
            .unwrap();
        if let Some(record) = claimed {
            break (now, record);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never claimed between the worker's rounds"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let mut state = record.state.expect("a state");
    let long_ago = now - chrono::Duration::minutes(31);
    state["last_active_at"] = json!(long_ago);
    assert!(
        scene
            .store
            .save_conversation(&ConversationSave {
                phone: phone.as_str(),
                node: "test",
                version: record.version,
                user_id: record.user_id.unwrap(),
                state: &state,
                last_active_at: Some(long_ago),
                expires_at: Some(now - chrono::Duration::minutes(1)),
                inbound_id: None,
                replies: &[],
                at: now,
            })
            .await
            .unwrap()
    );
    scene
        .store
        .release_conversation(phone.as_str(), "test")
        .await
        .unwrap();
    scene
        .expect(&mut pia, "the note", |r| {
            body_text(r).contains("timed out after 30 minutes")
        })
        .await;
    scene.expect_nothing_more(&pia).await;
}

async fn a_number_links_to_an_account_only_with_that_phone_verified(kind: Db) {
    let db = TestDb::create(kind).await;
    let store = migrated_store(&db).await;
    let phone = Phone::parse("+358401110007").unwrap();
    // An account that merely typed the number is not the number's owner.
    let typed = store
        .create_user(crate::helpers::new_user(
            "typed@example.com",
            mealkitz::domain::Role::Customer,
        ))
        .await
        .unwrap();
    store
        .set_user_contact(typed.id, Some(&phone), true)
        .await
        .unwrap();
    let first = store
        .whatsapp_customer(&phone, Some("Sanna"))
        .await
        .unwrap();
    assert_ne!(first.id, typed.id);
    assert_eq!(first.name, "Sanna");
    assert_eq!(first.phone.as_deref(), Some("+358401110007"));
    // The WhatsApp account is verified by WhatsApp: the next contact finds it again.
    let again = store
        .whatsapp_customer(&phone, Some("Other Name"))
        .await
        .unwrap();
    assert_eq!(again.id, first.id);
}

/// One worker on one replica moves a conversation at a time: a claim excludes others until it
/// is released or lapses, and a save needs the claim and the version read (so a worker whose
/// claim lapsed mid-message saves nothing, and the message waits for the new owner).
async fn one_worker_at_a_time_moves_a_conversation(kind: Db) {
    let db = TestDb::create(kind).await;
    let store = migrated_store(&db).await;
    let phone = Phone::parse("+358401110008").unwrap();
    let customer = store.whatsapp_customer(&phone, None).await.unwrap();
    let now = chrono::Utc::now();
    let secs = chrono::Duration::seconds;
    store
        .record_inbound_message(&mealkitz::store::InboundMessage {
            id: "wamid.CLAIM1".into(),
            phone: phone.as_str().into(),
            kind: "text".into(),
            message: json!({"type": "text", "text": {"body": "hi"}}),
            state: "received",
            received_at: now,
        })
        .await
        .unwrap();
    let claim = |node: &'static str, at: chrono::DateTime<chrono::Utc>| {
        let store = store.clone();
        let phone = phone.clone();
        async move {
            store
                .claim_conversation(phone.as_str(), node, at, at + chrono::Duration::seconds(30))
                .await
                .unwrap()
        }
    };
    let a = claim("a", now)
        .await
        .expect("the first claim makes the row");
    assert_eq!((a.version, a.state.is_none()), (0, true));
    assert!(claim("b", now).await.is_none(), "held by a");
    assert!(claim("a", now).await.is_some(), "a renews its own claim");
    let state = json!({"stage": "start"});
    let replies = vec![
        ("msg_1".to_owned(), json!({"type": "text"})),
        ("msg_2".to_owned(), json!({"type": "text"})),
    ];
    let save = |node: &'static str, version: i64| ConversationSave {
        phone: phone.as_str(),
        node,
        version,
        user_id: customer.id,
        state: &state,
        last_active_at: Some(now),
        expires_at: None,
        inbound_id: Some("wamid.CLAIM1"),
        replies: &replies,
        at: now,
    };
    assert!(
        !store.save_conversation(&save("b", 0)).await.unwrap(),
        "b holds no claim"
    );
    assert!(
        !store.save_conversation(&save("a", 1)).await.unwrap(),
        "a stale version"
    );
    assert_eq!(
        count_rows(&db, "whatsapp_outbound").await,
        0,
        "nothing saved"
    );
    assert!(store.save_conversation(&save("a", 0)).await.unwrap());
    assert_eq!(
        count_rows(&db, "whatsapp_outbound WHERE state = 'pending'").await,
        2
    );
    assert_eq!(
        count_rows(
            &db,
            "whatsapp_inbox WHERE id = 'wamid.CLAIM1' AND state = 'processed'"
        )
        .await,
        1
    );
    let waiting = store.pending_replies(phone.as_str()).await.unwrap();
    assert_eq!(
        waiting.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        ["msg_1", "msg_2"],
        "replies wait in order"
    );
    store
        .release_conversation(phone.as_str(), "a")
        .await
        .unwrap();
    let b = claim("b", now).await.expect("released");
    assert_eq!(b.version, 1);
    assert_eq!(b.user_id, Some(customer.id));
    // b dies holding it: its claim lapses and c takes over.
    assert!(claim("c", now + secs(10)).await.is_none());
    assert!(
        claim("c", now + secs(31)).await.is_some(),
        "a lapsed claim is taken over"
    );
}

/// A customer with a web account links their number by sending the code the account shows:
/// the message proves the number, the code the account.
async fn a_link_code_sent_from_the_phone_links_the_number_to_the_account(kind: Db) {
    let scene = Scene::start(kind).await;
    let web = scene.app.signed_up("customer").await;
    let mut sanna = Person::new("358401110009", "Sanna");
    scene.say(&mut sanna, "link ABCD-EFGH").await;
    scene
        .expect(&mut sanna, "a refusal", |r| {
            body_text(r).contains("doesn't work")
        })
        .await;
    let made = scene
        .app
        .request(
            "POST",
            "/api/v1/me/whatsapp-link",
            Some(&web.token),
            &[],
            None,
        )
        .await;
    assert_eq!(made.status, 201, "{}", made.text);
    let message = made.body["message"].as_str().unwrap().to_owned();
    assert!(message.starts_with("link "), "{message}");
    // Typed in lower case, as people do.
    scene.say(&mut sanna, &message.to_lowercase()).await;
    scene
        .expect(&mut sanna, "the confirmation", |r| {
            body_text(r).contains("now orders for the account")
        })
        .await;
    let me = scene.app.get_authed("/api/v1/me", &web.token).await;
    assert_eq!(me.body["phone"], "+358401110009", "{}", me.text);
    assert_eq!(me.body["phone_verified"], true, "{}", me.text);
    assert_eq!(me.body["notify_whatsapp"], true, "{}", me.text);
    let owner = scene
        .store
        .whatsapp_customer(&sanna.phone(), None)
        .await
        .unwrap();
    assert_eq!(owner.id.to_string(), me.body["id"].as_str().unwrap());
    // What the chat orders from now on is the account's.
    let token = order_up_to_the_link(&scene, &mut sanna).await;
    let (status, order) = pay(&scene, &token, "pm_card_visa").await;
    assert_eq!(status, 201, "{order}");
    let seen = scene
        .app
        .get_authed(
            &format!("/api/v1/orders/{}", order["id"].as_str().unwrap()),
            &web.token,
        )
        .await;
    assert_eq!(
        seen.status, 200,
        "the linked account sees the order: {}",
        seen.text
    );
    // The code is spent.
    scene.say(&mut sanna, &message).await;
    scene
        .expect(&mut sanna, "a refusal of the spent code", |r| {
            body_text(r).contains("doesn't work")
        })
        .await;
    // Another number on the account is not verified.
    let changed = scene
        .app
        .request(
            "PATCH",
            "/api/v1/me",
            Some(&web.token),
            &[],
            Some(&json!({"phone": "+358401119999"})),
        )
        .await;
    assert_eq!(changed.body["phone_verified"], false, "{}", changed.text);
}

/// With the offline map of Helsinki (OpenStreetMap contributors, ODbL) loaded, a typed address is
/// looked up, and a pin shared without a name is named after the address it is on.
#[actix_web::test]
async fn typed_addresses_and_bare_pins_are_read_on_the_helsinki_map() {
    let data = |file: &str| format!("{}/data/helsinki/{file}", env!("CARGO_MANIFEST_DIR"));
    let graph = GraphApi::start().await;
    let db = TestDb::create(Db::Sqlite).await;
    let mut config = chat_config(&db, &graph);
    let helsinki = Config::from_args([
        format!("--map-data={}", data("Helsinki.osm.pbf")),
        format!("--regions={}", data("regions.geojson")),
    ])
    .expect("the Helsinki settings are valid");
    config.maps = helsinki.maps;
    config.dispatch.regions = helsinki.dispatch.regions;
    let app = spawn_app_with(db, config).await;
    let owner = app.signed_up("merchant").await;
    // A kitchen on Aleksanterinkatu.
    let pickup = Position {
        lat: 60.16866,
        lon: 24.94722,
    };
    let created = app
        .post_authed(
            "/api/v1/merchants",
            &owner.token,
            &json!({"name": "Kallio Kitchen", "address": "Aleksanterinkatu 52", "location": pickup}),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text);
    let kitchen: MerchantId = created.body["id"].as_str().unwrap().parse().unwrap();
    let menu = app
        .put_authed(
            &format!("/api/v1/merchants/{kitchen}/menu"),
            &owner.token,
            &json!({"items": [{"name": "Salmon soup kit", "price_cents": 1490}]}),
        )
        .await;
    assert_eq!(menu.status, 200, "{}", menu.text);
    let store = migrated_store(&app.db).await;
    let scene = Scene {
        app,
        store,
        graph,
        kitchen,
        pickup,
    };
    let mut ville = Person::new("358401110010", "Ville");
    scene.greeted(&mut ville, "moi").await;
    scene.say(&mut ville, "mannerheimintie 5, helsinki").await;
    let kitchens = scene
        .expect(&mut ville, "the kitchens near the typed address", |r| {
            interactive(r, "list")
        })
        .await;
    assert!(
        body_text(&kitchens).contains("to Mannerheimintie 5, Helsinki"),
        "{}",
        body_text(&kitchens)
    );
    assert!(list_ids(&kitchens).contains(&format!("kitchen:{kitchen}")));
    // Start over, and share a pin with no name a few metres from that door.
    scene.say(&mut ville, "start over").await;
    scene
        .expect(&mut ville, "the location asked again", |r| {
            interactive(r, "location_request_message") && body_text(r).contains("type *same*")
        })
        .await;
    scene
        .send(
            &mut ville,
            json!({"type": "location", "location": {"latitude": 60.16866, "longitude": 24.94722}}),
        )
        .await;
    let named = scene
        .expect(&mut ville, "the kitchens near the pin", |r| {
            interactive(r, "list")
        })
        .await;
    assert!(
        body_text(&named).contains("Helsinki") && !body_text(&named).contains("Pinned location"),
        "the pin is named by the map: {}",
        body_text(&named)
    );
}

/// Two `mealkitz serve` processes on one database: the customer's messages land on either, the
/// conversation moves on whichever claims it, and after one is killed (SIGKILL) the other carries
/// the same conversation to a placed order. Every step is answered by one reply: replies go out
/// at least once (docs/whatsapp.md#guarantees), so a reply the killed replica had handed to the
/// Graph API but not yet recorded as sent is sent again by the other one — with the same id.
#[actix_web::test]
async fn the_conversation_goes_on_across_replicas_and_past_a_killed_one() {
    let graph = GraphApi::start().await;
    let settings = vec![
        ("MEALKITZ_WHATSAPP_API_URL", graph.url.clone()),
        ("MEALKITZ_WHATSAPP_API_VERSION", API_VERSION.to_owned()),
        (
            "MEALKITZ_WHATSAPP_PHONE_NUMBER_ID",
            PHONE_NUMBER_ID.to_owned(),
        ),
        ("MEALKITZ_WHATSAPP_TOKEN", ACCESS_TOKEN.to_owned()),
        ("MEALKITZ_WHATSAPP_APP_SECRET", APP_SECRET.to_owned()),
        ("MEALKITZ_PUBLIC_URL", PUBLIC_URL.to_owned()),
        ("MEALKITZ_NOTIFIER_CLAIM_SECS", "2".to_owned()),
    ];
    let mut processes = Processes::new(true, settings).await;
    migrated_store(processes.db()).await.close().await;
    processes.start(2).await;
    let shop = processes.open_shop(0, -5_000.0, -5_000.0).await;
    let address = |processes: &Processes, n: usize| processes.all()[n].address.clone();
    let mut noora = Person::new("358401110011", "Noora");
    // Each message to the other replica than the one before.
    let mut turn = 0;
    let mut send = async |processes: &Processes, who: &mut Person, message: Value| {
        let (_, body) = who.envelope(message);
        let via = processes.next_live(turn);
        turn = via + 1;
        assert_eq!(post_signed_to(&address(processes, via), &body).await, 200);
    };
    send(
        &processes,
        &mut noora,
        json!({"type": "text", "text": {"body": "hi"}}),
    )
    .await;
    expect_on(&graph, &mut noora, "the greeting", |r| {
        interactive(r, "location_request_message")
    })
    .await;
    let home = offset_m(shop.location, 800.0, 0.0);
    send(
        &processes,
        &mut noora,
        json!({"type": "location", "location": {"latitude": home.lat, "longitude": home.lon}}),
    )
    .await;
    expect_on(&graph, &mut noora, "the kitchens", |r| {
        interactive(r, "list")
    })
    .await;
    send(
        &processes,
        &mut noora,
        tap(&format!("kitchen:{}", shop.merchant_id)),
    )
    .await;
    expect_on(&graph, &mut noora, "the menu", |r| {
        interactive(r, "list") && body_text(r).contains("menu")
    })
    .await;
    // One replica dies (SIGKILL); the conversation carries on on the other.
    processes.kill(0);
    send(
        &processes,
        &mut noora,
        tap(&format!("dish:{}", shop.items[0])),
    )
    .await;
    expect_on(&graph, &mut noora, "the quantity", |r| {
        interactive(r, "button")
    })
    .await;
    send(&processes, &mut noora, tap("qty:3")).await;
    expect_on(&graph, &mut noora, "the basket", |r| {
        body_text(r).contains("3 ×")
    })
    .await;
    send(&processes, &mut noora, tap("basket:checkout")).await;
    let link = expect_on(&graph, &mut noora, "the link", |r| {
        body_text(r).contains("/pay/")
    })
    .await;
    let token = pay_token(&body_text(&link)).unwrap();
    let paid = processes
        .rest(
            1,
            "POST",
            &format!("/api/v1/pay/{token}"),
            None,
            &[],
            Some(&json!({"payment_method": "pm_card_visa"})),
        )
        .await;
    assert_eq!(paid.status, 201, "{}", paid.text);
    expect_on(&graph, &mut noora, "placed", |r| {
        body_text(r).contains("placed")
    })
    .await;
    // Seven answers for seven messages (and the paid link), each its own reply id. A request
    // seen again carries an id seen before and the same body: the at-least-once resend of a
    // reply whose "sent" was not recorded (the killed replica's, or one whose claim lapsed).
    let mine: Vec<GraphRequest> = graph
        .requests()
        .into_iter()
        .filter(|r| r.to() == noora.digits)
        .collect();
    let described: Vec<String> = mine.iter().map(GraphRequest::summary).collect();
    let mut answers: Vec<&GraphRequest> = Vec::new();
    for request in &mine {
        assert!(
            !request.message_id().is_empty(),
            "every reply carries its id: {described:#?}"
        );
        let first = answers
            .iter()
            .copied()
            .find(|a| a.message_id() == request.message_id());
        match first {
            Some(first) => assert_eq!(
                first.body, request.body,
                "a reply sent again is the same reply: {described:#?}"
            ),
            None => answers.push(request),
        }
    }
    assert_eq!(answers.len(), 7, "one answer per step: {described:#?}");
}

/// Messages are personal data: what is read, sent, spent or expired goes after 30 days; what
/// still waits stays.
async fn old_messages_links_and_codes_are_pruned_and_waiting_ones_kept(kind: Db) {
    let db = TestDb::create(kind).await;
    let store = migrated_store(&db).await;
    let phone = Phone::parse("+358401110012").unwrap();
    let customer = store.whatsapp_customer(&phone, None).await.unwrap();
    let now = chrono::Utc::now();
    let old = now - chrono::Duration::days(31);
    for (id, state, at) in [
        ("wamid.old-read", "processed", old),
        ("wamid.old-waiting", "received", old),
        ("wamid.new-read", "processed", now),
    ] {
        store
            .record_inbound_message(&mealkitz::store::InboundMessage {
                id: id.into(),
                phone: phone.as_str().into(),
                kind: "text".into(),
                message: json!({"type": "text", "text": {"body": "hi"}}),
                state,
                received_at: at,
            })
            .await
            .unwrap();
    }
    store
        .create_whatsapp_link_code(customer.id, "old-code", old, old)
        .await
        .unwrap();
    store
        .create_whatsapp_link_code(
            customer.id,
            "new-code",
            now,
            now + chrono::Duration::minutes(10),
        )
        .await
        .unwrap();
    let deleted = store
        .prune_whatsapp(now - chrono::Duration::days(30))
        .await
        .unwrap();
    assert_eq!(deleted, 2, "the old read message and the old code");
    assert_eq!(count_rows(&db, "whatsapp_inbox").await, 2);
    assert_eq!(
        count_rows(&db, "whatsapp_inbox WHERE id = 'wamid.old-waiting'").await,
        1,
        "a message still waiting is never pruned"
    );
    assert_eq!(count_rows(&db, "whatsapp_link_codes").await, 1);
}

each_backend! {
    old_messages_links_and_codes_are_pruned_and_waiting_ones_kept => old_messages_links_and_codes_are_pruned_and_waiting_ones_kept;
    a_link_code_sent_from_the_phone_links_the_number_to_the_account => a_link_code_sent_from_the_phone_links_the_number_to_the_account;
    one_worker_at_a_time_moves_a_conversation => one_worker_at_a_time_moves_a_conversation;
    a_whole_order_over_whatsapp_from_hi_to_delivered => a_whole_order_over_whatsapp_from_hi_to_delivered;
    a_redelivered_message_acts_once_and_unreadable_ones_get_help => a_redelivered_message_acts_once_and_unreadable_ones_get_help;
    a_number_links_to_an_account_only_with_that_phone_verified => a_number_links_to_an_account_only_with_that_phone_verified;
}
