//! The wire format between replicas, pinned by golden JSON files (tests/golden/wire/): every
//! routed command, every reply, the error that crosses replicas and every feed update. A rolling
//! upgrade runs old and new replicas side by side, so what one writes the other must read; these
//! files were written by the code of the day issue 14 started and must not change with it.
//!
//! Each case is built by one small function, so a change of the Rust types (one struct per
//! command instead of one enum) touches only the builders, never the files or the assertions.
//! The envelopes around these values are private to the router; their files are checked by a
//! unit test beside it (see tests/golden/wire/README.md).
//!
//! A new case's file is written by running the test with `WIRE_GOLDEN_WRITE_MISSING=1`: only
//! files that do not exist yet are written, so an existing fixture can never be rewritten to
//! match a changed format.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use mealkitz::actors::commands::*;
use mealkitz::actors::wire::{FeedItem, Reply};
use mealkitz::actors::{
    Canceller, DriverFeed, DriverStatus, LegKind, OfferView, OrderFeed, RouteView,
};
use mealkitz::actors::{Command, Subscription};
use mealkitz::cluster::wire::RemoteError;
use mealkitz::domain::{
    Cents, DispatchStatus, HistoryEntry, MerchantId, NewOrder, OrderId, OrderItem, OrderStatus,
    OrderView, Position, UserId,
};
use mealkitz::geo::RegionId;
use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use uuid::Uuid;

/// Where the golden files live.
fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/wire")
}

/// Files under the golden folder that this test does not check: the envelopes (private to the
/// router, checked by its unit test) and the folder's README.
const CHECKED_ELSEWHERE: &[&str] = &["envelope/", "README.md"];

/// One golden case: its file (relative to the golden folder), the value as JSON, and how the
/// file's JSON reads back into the Rust type and is written again.
struct Case {
    file: &'static str,
    pretty: String,
    json: Value,
    round_trip: fn(&Value) -> Result<Value, String>,
}

fn round_trip<T: Serialize + DeserializeOwned>(json: &Value) -> Result<Value, String> {
    let value: T = serde_json::from_value(json.clone()).map_err(|e| e.to_string())?;
    serde_json::to_value(&value).map_err(|e| e.to_string())
}

fn case<T: Serialize + DeserializeOwned>(file: &'static str, value: T) -> Case {
    Case {
        file,
        pretty: serde_json::to_string_pretty(&value).expect("serializes") + "\n",
        json: serde_json::to_value(&value).expect("serializes"),
        round_trip: round_trip::<T>,
    }
}

/// Every case, by file.
fn cases() -> Vec<Case> {
    vec![
        // Commands.
        case("call/place_order.json", call_place_order()),
        case("call/merchant_accept.json", call_merchant_accept()),
        case("call/merchant_reject.json", call_merchant_reject()),
        case("call/merchant_ready.json", call_merchant_ready()),
        case(
            "call/cancel_order_by_customer.json",
            call_cancel_order_by_customer(),
        ),
        case(
            "call/cancel_order_by_admin.json",
            call_cancel_order_by_admin(),
        ),
        case("call/get_order.json", call_get_order()),
        case("call/driver_location.json", call_driver_location()),
        case(
            "call/driver_location_without_time.json",
            call_driver_location_without_time(),
        ),
        case("call/driver_availability.json", call_driver_availability()),
        case("call/driver_offline.json", call_driver_offline()),
        case("call/driver_disconnected.json", call_driver_disconnected()),
        case("call/answer_offer_accept.json", call_answer_offer(true)),
        case("call/answer_offer_decline.json", call_answer_offer(false)),
        case("call/picked_up.json", call_picked_up()),
        case("call/delivered.json", call_delivered()),
        case("call/driver_status.json", call_driver_status()),
        case("call/indexed_drivers.json", call_indexed_drivers()),
        case("call/subscribe_order.json", call_subscribe_order()),
        case("call/subscribe_board.json", call_subscribe_board()),
        case("call/subscribe_driver.json", call_subscribe_driver()),
        // Replies.
        case("reply/done.json", reply_done()),
        case("reply/order.json", reply_order()),
        case("reply/maybe_order_some.json", reply_maybe_order(true)),
        case("reply/maybe_order_none.json", reply_maybe_order(false)),
        case("reply/driver.json", reply_driver()),
        case("reply/driver_feed_active.json", reply_driver_feed(true)),
        case("reply/driver_feed_idle.json", reply_driver_feed(false)),
        case("reply/board.json", reply_board()),
        case("reply/count.json", reply_count()),
        // The error that crosses replicas.
        case("remote_error/retry.json", remote_error_retry()),
        case("remote_error/final.json", remote_error_final()),
        // Feed updates.
        case("feed_item/order_update.json", feed_order_update()),
        case(
            "feed_item/order_driver_location.json",
            feed_order_driver_location(),
        ),
        case("feed_item/board.json", feed_board()),
        case("feed_item/driver_offer.json", feed_driver_offer()),
        case(
            "feed_item/driver_offer_expired.json",
            feed_driver_offer_expired(),
        ),
        case("feed_item/driver_assigned.json", feed_driver_assigned()),
        case(
            "feed_item/driver_order_update.json",
            feed_driver_order_update(),
        ),
        case("feed_item/order_route.json", feed_order_route()),
        case("feed_item/driver_route.json", feed_driver_route()),
    ]
}

// ---- Fixed values, so every file is the same on every run. ----

fn uuid(text: &str) -> Uuid {
    Uuid::parse_str(text).expect("a fixed uuid")
}

fn at(text: &str) -> DateTime<Utc> {
    text.parse().expect("a fixed RFC 3339 time")
}

fn order_id() -> OrderId {
    OrderId(uuid("01912f6e-5a00-7c3b-9d41-6f2a8b0c1d01"))
}

fn merchant_id() -> MerchantId {
    MerchantId(uuid("01912f6e-5a00-7c3b-9d41-6f2a8b0c1d02"))
}

fn customer_id() -> UserId {
    UserId(uuid("01912f6e-5a00-7c3b-9d41-6f2a8b0c1d03"))
}

fn driver_id() -> UserId {
    UserId(uuid("01912f6e-5a00-7c3b-9d41-6f2a8b0c1d04"))
}

fn offer_id() -> Uuid {
    uuid("01912f6e-5a00-7c3b-9d41-6f2a8b0c1d05")
}

fn sub_id() -> Uuid {
    uuid("01912f6e-5a00-7c3b-9d41-6f2a8b0c1d06")
}

fn menu_item_id() -> Uuid {
    uuid("01912f6e-5a00-7c3b-9d41-6f2a8b0c1d07")
}

fn pickup() -> Position {
    Position {
        lat: 40.7527,
        lon: -73.9772,
    }
}

fn dropoff() -> Position {
    Position {
        lat: 40.7614,
        lon: -73.9776,
    }
}

fn items() -> Vec<OrderItem> {
    vec![
        OrderItem {
            menu_item_id: Some(menu_item_id()),
            name: "Miso ramen kit".into(),
            quantity: 2,
            unit_price_cents: Cents(1250),
        },
        OrderItem {
            menu_item_id: None,
            name: "Gyoza (6)".into(),
            quantity: 1,
            unit_price_cents: Cents(650),
        },
    ]
}

fn new_order() -> NewOrder {
    NewOrder {
        id: order_id(),
        merchant_id: merchant_id(),
        customer_id: customer_id(),
        items: items(),
        delivery_fee_cents: Cents(399),
        total_cents: Cents(3549),
        pickup: pickup(),
        dropoff: dropoff(),
        dropoff_address: "350 5th Ave, New York, NY 10118".into(),
        pickup_address: "1 Kitchen Street".into(),
    }
}

fn history(
    status: Option<OrderStatus>,
    dispatch: Option<DispatchStatus>,
    time: &str,
) -> HistoryEntry {
    HistoryEntry {
        status,
        dispatch_status: dispatch,
        at: at(time),
    }
}

/// An order just placed, waiting for its merchant.
fn placed_view() -> OrderView {
    OrderView {
        id: order_id(),
        status: OrderStatus::Placed,
        dispatch_status: DispatchStatus::Unassigned,
        merchant_id: merchant_id(),
        customer_id: customer_id(),
        driver_id: None,
        items: items(),
        delivery_fee_cents: Cents(399),
        total_cents: Cents(3549),
        pickup: pickup(),
        dropoff: dropoff(),
        dropoff_address: "350 5th Ave, New York, NY 10118".into(),
        pickup_address: "1 Kitchen Street".into(),
        prep_minutes: None,
        created_at: at("2024-08-20T18:30:00Z"),
        updated_at: at("2024-08-20T18:30:00Z"),
        events: vec![history(
            Some(OrderStatus::Placed),
            Some(DispatchStatus::Unassigned),
            "2024-08-20T18:30:00Z",
        )],
    }
}

/// The same order accepted by its merchant and taken by the driver.
fn assigned_view() -> OrderView {
    let mut view = placed_view();
    view.status = OrderStatus::Accepted;
    view.dispatch_status = DispatchStatus::Assigned;
    view.driver_id = Some(driver_id());
    view.prep_minutes = Some(15);
    view.updated_at = at("2024-08-20T18:31:42.250Z");
    view.events.extend([
        history(Some(OrderStatus::Accepted), None, "2024-08-20T18:31:05Z"),
        history(
            None,
            Some(DispatchStatus::Searching),
            "2024-08-20T18:31:05Z",
        ),
        history(
            None,
            Some(DispatchStatus::Offered),
            "2024-08-20T18:31:06.500Z",
        ),
        history(
            None,
            Some(DispatchStatus::Assigned),
            "2024-08-20T18:31:42.250Z",
        ),
    ]);
    view
}

/// Another order of the same merchant, ready for pickup.
fn ready_view() -> OrderView {
    let mut view = assigned_view();
    view.id = OrderId(uuid("01912f6e-5a00-7c3b-9d41-6f2a8b0c1d11"));
    view.customer_id = UserId(uuid("01912f6e-5a00-7c3b-9d41-6f2a8b0c1d13"));
    view.status = OrderStatus::Ready;
    view.updated_at = at("2024-08-20T18:46:10Z");
    view.events.push(history(
        Some(OrderStatus::Ready),
        None,
        "2024-08-20T18:46:10Z",
    ));
    view
}

fn offer() -> OfferView {
    OfferView {
        offer_id: offer_id(),
        order_id: order_id(),
        pickup: pickup(),
        dropoff: dropoff(),
        expires_at: at("2024-08-20T18:31:36.500Z"),
        pickup_address: "1 Kitchen Street".into(),
        dropoff_address: "350 5th Ave, New York, NY 10118".into(),
        pickup_eta_seconds: Some(312.0),
    }
}

/// A driver on duty near the pickup, holding an offer.
fn offered_driver() -> DriverStatus {
    DriverStatus {
        driver_id: driver_id(),
        online: true,
        available: true,
        location: Some(Position {
            lat: 40.7505,
            lon: -73.9934,
        }),
        offer: Some(offer()),
        active_order_id: None,
    }
}

/// The same driver once the order is theirs.
fn busy_driver() -> DriverStatus {
    DriverStatus {
        offer: None,
        active_order_id: Some(order_id()),
        ..offered_driver()
    }
}

// ---- Commands. ----

/// A command as it travels: its struct's JSON plus its `"op"`.
struct Cmd<C>(C);

/// A subscription as it travels: its struct's JSON plus its `"op"`.
struct Sub<S>(S);

fn with_op<T: Serialize, S: Serializer>(
    op: &str,
    value: &T,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    let mut json = serde_json::to_value(value).map_err(serde::ser::Error::custom)?;
    json["op"] = Value::String(op.to_owned());
    json.serialize(serializer)
}

fn without_op<'de, T: DeserializeOwned, D: Deserializer<'de>>(
    op: &str,
    deserializer: D,
) -> Result<T, D::Error> {
    let json = Value::deserialize(deserializer)?;
    if json["op"] != op {
        return Err(D::Error::custom(format!(
            "expected op {op}, found {}",
            json["op"]
        )));
    }
    serde_json::from_value(json).map_err(D::Error::custom)
}

impl<C: Command> Serialize for Cmd<C> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        with_op(C::OP, &self.0, serializer)
    }
}

impl<'de, C: Command> Deserialize<'de> for Cmd<C> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        without_op(C::OP, deserializer).map(Cmd)
    }
}

impl<S: Subscription> Serialize for Sub<S> {
    fn serialize<Z: Serializer>(&self, serializer: Z) -> Result<Z::Ok, Z::Error> {
        with_op(S::OP, &self.0, serializer)
    }
}

impl<'de, S: Subscription> Deserialize<'de> for Sub<S> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        without_op(S::OP, deserializer).map(Sub)
    }
}

fn call_place_order() -> Cmd<PlaceOrder> {
    Cmd(PlaceOrder { order: new_order() })
}

fn call_merchant_accept() -> Cmd<MerchantAccept> {
    Cmd(MerchantAccept {
        merchant_id: merchant_id(),
        order_id: order_id(),
        prep_minutes: 15,
    })
}

fn call_merchant_reject() -> Cmd<MerchantReject> {
    Cmd(MerchantReject {
        merchant_id: merchant_id(),
        order_id: order_id(),
        reason: "out of miso".into(),
    })
}

fn call_merchant_ready() -> Cmd<MerchantReady> {
    Cmd(MerchantReady {
        merchant_id: merchant_id(),
        order_id: order_id(),
    })
}

fn call_cancel_order_by_customer() -> Cmd<CancelOrder> {
    Cmd(CancelOrder {
        order_id: order_id(),
        by: Canceller::Customer(customer_id()),
        reason: "ordered by mistake".into(),
    })
}

fn call_cancel_order_by_admin() -> Cmd<CancelOrder> {
    Cmd(CancelOrder {
        order_id: order_id(),
        by: Canceller::Admin,
        reason: "merchant closed early".into(),
    })
}

fn call_get_order() -> Cmd<GetOrder> {
    Cmd(GetOrder {
        order_id: order_id(),
    })
}

fn call_driver_location() -> Cmd<DriverLocation> {
    Cmd(DriverLocation {
        driver: driver_id(),
        lat: 40.7505,
        lon: -73.9934,
        ts_ms: Some(1_724_178_660_250),
    })
}

fn call_driver_location_without_time() -> Cmd<DriverLocation> {
    Cmd(DriverLocation {
        driver: driver_id(),
        lat: 40.7505,
        lon: -73.9934,
        ts_ms: None,
    })
}

fn call_driver_availability() -> Cmd<DriverAvailability> {
    Cmd(DriverAvailability {
        driver: driver_id(),
        available: true,
    })
}

fn call_driver_offline() -> Cmd<DriverOffline> {
    Cmd(DriverOffline {
        driver: driver_id(),
    })
}

fn call_driver_disconnected() -> Cmd<DriverDisconnected> {
    Cmd(DriverDisconnected {
        driver: driver_id(),
    })
}

fn call_answer_offer(accept: bool) -> Cmd<AnswerOffer> {
    Cmd(AnswerOffer {
        driver: driver_id(),
        offer_id: offer_id(),
        accept,
    })
}

fn call_picked_up() -> Cmd<PickedUp> {
    Cmd(PickedUp {
        driver: driver_id(),
        order_id: order_id(),
    })
}

fn call_delivered() -> Cmd<Delivered> {
    Cmd(Delivered {
        driver: driver_id(),
        order_id: order_id(),
    })
}

fn call_driver_status() -> Cmd<ReadDriverStatus> {
    Cmd(ReadDriverStatus {
        driver: driver_id(),
    })
}

fn call_indexed_drivers() -> Cmd<IndexedDrivers> {
    Cmd(IndexedDrivers {
        region: RegionId::from("ne"),
    })
}

fn call_subscribe_order() -> Sub<SubscribeOrder> {
    Sub(SubscribeOrder {
        order_id: order_id(),
        sub: sub_id(),
    })
}

fn call_subscribe_board() -> Sub<SubscribeBoard> {
    Sub(SubscribeBoard {
        merchant_id: merchant_id(),
        sub: sub_id(),
    })
}

fn call_subscribe_driver() -> Sub<SubscribeDriver> {
    Sub(SubscribeDriver {
        driver: driver_id(),
        sub: sub_id(),
    })
}

// ---- Replies. ----

fn reply_done() -> Reply {
    Reply::Done
}

fn reply_order() -> Reply {
    Reply::Order {
        order: placed_view(),
    }
}

fn reply_maybe_order(found: bool) -> Reply {
    Reply::MaybeOrder {
        order: found.then(assigned_view),
    }
}

fn reply_driver() -> Reply {
    Reply::Driver {
        status: offered_driver(),
    }
}

fn reply_driver_feed(active: bool) -> Reply {
    if active {
        Reply::DriverFeed {
            status: Box::new(busy_driver()),
            active: Some(assigned_view()),
        }
    } else {
        Reply::DriverFeed {
            status: Box::new(offered_driver()),
            active: None,
        }
    }
}

fn reply_board() -> Reply {
    Reply::Board {
        orders: vec![assigned_view(), ready_view()],
    }
}

fn reply_count() -> Reply {
    Reply::Count { count: 42 }
}

// ---- Errors. ----

fn remote_error_retry() -> RemoteError {
    RemoteError {
        code: "dispatch_unavailable".into(),
        message: "this replica does not hold region ne; try again shortly".into(),
        retry: true,
    }
}

fn remote_error_final() -> RemoteError {
    RemoteError {
        code: "offer_expired".into(),
        message: "the offer has expired".into(),
        retry: false,
    }
}

// ---- Feed updates. ----

fn feed_order_update() -> FeedItem {
    FeedItem::Order {
        item: OrderFeed::Update(Box::new(assigned_view())),
    }
}

fn feed_order_driver_location() -> FeedItem {
    FeedItem::Order {
        item: OrderFeed::DriverLocation {
            lat: 40.7561,
            lon: -73.9801,
            eta_seconds: 312.5,
        },
    }
}

fn feed_board() -> FeedItem {
    FeedItem::Board {
        order: Box::new(ready_view()),
    }
}

fn feed_driver_offer() -> FeedItem {
    FeedItem::Driver {
        item: DriverFeed::Offer(Box::new(offer())),
    }
}

fn feed_driver_offer_expired() -> FeedItem {
    FeedItem::Driver {
        item: DriverFeed::OfferExpired {
            offer_id: offer_id(),
        },
    }
}

fn feed_driver_assigned() -> FeedItem {
    FeedItem::Driver {
        item: DriverFeed::Assigned(Box::new(assigned_view())),
    }
}

fn feed_driver_order_update() -> FeedItem {
    FeedItem::Driver {
        item: DriverFeed::OrderUpdate(Box::new(ready_view())),
    }
}

fn route() -> RouteView {
    RouteView {
        order_id: order_id(),
        leg: LegKind::ToPickup,
        points: vec![
            [40.7561, -73.9801],
            [40.7545, -73.9789],
            [40.7527, -73.9772],
        ],
        duration_secs: 312.5,
        distance_m: 1_840.0,
        by_road: true,
    }
}

fn feed_order_route() -> FeedItem {
    FeedItem::Order {
        item: OrderFeed::Route(Box::new(route())),
    }
}

fn feed_driver_route() -> FeedItem {
    FeedItem::Driver {
        item: DriverFeed::Route(Box::new(RouteView {
            leg: LegKind::ToDropoff,
            ..route()
        })),
    }
}

// ---- The checks. ----

/// Reads a golden file; with `WIRE_GOLDEN_WRITE_MISSING=1` a missing one is written from the
/// value first (an existing one never is).
fn golden(case: &Case) -> Result<Value, String> {
    let path = golden_dir().join(case.file);
    if !path.exists() && std::env::var_os("WIRE_GOLDEN_WRITE_MISSING").is_some() {
        std::fs::create_dir_all(path.parent().expect("a folder")).map_err(|e| e.to_string())?;
        std::fs::write(&path, &case.pretty).map_err(|e| e.to_string())?;
    }
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: not JSON: {e}", path.display()))
}

#[test]
fn every_routed_value_serializes_to_its_golden_json() {
    let mut failures = Vec::new();
    for case in cases() {
        match golden(&case) {
            Ok(expected) if expected == case.json => {}
            Ok(expected) => failures.push(format!(
                "{}: serializes to\n{}\nbut the golden file holds\n{}",
                case.file,
                serde_json::to_string_pretty(&case.json).unwrap(),
                serde_json::to_string_pretty(&expected).unwrap(),
            )),
            Err(problem) => failures.push(format!("{}: {problem}", case.file)),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn every_golden_json_reads_back_and_serializes_the_same() {
    let mut failures = Vec::new();
    for case in cases() {
        let expected = match golden(&case) {
            Ok(expected) => expected,
            Err(problem) => {
                failures.push(format!("{}: {problem}", case.file));
                continue;
            }
        };
        match (case.round_trip)(&expected) {
            Ok(again) if again == expected => {}
            Ok(again) => failures.push(format!(
                "{}: reads back and serializes as\n{}",
                case.file,
                serde_json::to_string_pretty(&again).unwrap(),
            )),
            Err(problem) => failures.push(format!("{}: does not read back: {problem}", case.file)),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// Every file in the golden folder belongs to a case (or to the router's envelope test), so a
/// fixture cannot be dropped from the checks by deleting its case.
#[test]
fn every_golden_file_has_a_case() {
    fn walk(dir: &Path, base: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).expect("the golden folder") {
            let path = entry.expect("an entry").path();
            if path.is_dir() {
                walk(&path, base, out);
            } else {
                let relative = path.strip_prefix(base).expect("under the folder");
                out.push(relative.to_string_lossy().replace('\\', "/"));
            }
        }
    }
    let dir = golden_dir();
    let mut files = Vec::new();
    walk(&dir, &dir, &mut files);
    let cases: Vec<&str> = cases().iter().map(|case| case.file).collect();
    let mut orphans: Vec<&String> = files
        .iter()
        .filter(|file| !CHECKED_ELSEWHERE.iter().any(|skip| file.starts_with(skip)))
        .filter(|file| !cases.contains(&file.as_str()))
        .collect();
    orphans.sort();
    assert!(
        orphans.is_empty(),
        "golden files without a case: {orphans:?}"
    );
}
