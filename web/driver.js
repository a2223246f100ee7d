// The driver app: go online, share a location (the phone's, or a simulated drive along a
// straight line), answer offers before their countdown ends, pick up and deliver.

import { clearSession, el, field, getSession, liveSocket, money, mountAuth, shortId, statusBadge } from "/assets/common.js";

const ROLE = "driver";
const root = document.getElementById("app");
const statusNode = document.getElementById("status");
const logout = document.getElementById("logout");
const EARTH_M = 6371008.8;
/** How often the app reports its location while driving. */
const REPORT_EVERY_MS = 1000;

function moveToward(from, to, metres) {
  const dLat = (to.lat - from.lat) * Math.PI / 180 * EARTH_M;
  const dLon = (to.lon - from.lon) * Math.PI / 180 * EARTH_M * Math.cos(from.lat * Math.PI / 180);
  const distance = Math.hypot(dLat, dLon);
  if (distance <= metres) return { ...to, arrived: true };
  const f = metres / distance;
  return { lat: from.lat + (to.lat - from.lat) * f, lon: from.lon + (to.lon - from.lon) * f, arrived: false };
}

function start(session) {
  logout.classList.remove("hidden");
  logout.onclick = () => { clearSession(ROLE); location.reload(); };

  const lat = field("Start latitude", { name: "lat", type: "number", step: "any", value: "40.7500" });
  const lon = field("Start longitude", { name: "lon", type: "number", step: "any", value: "-73.9850" });
  const speed = field("Speed (km/h)", { name: "speed", type: "number", min: 1, max: 500, value: "30" });
  const modeId = "location-mode";
  const mode = el("select", { id: modeId },
    el("option", { value: "drive" }, "Drive mode (simulated)"),
    el("option", { value: "gps" }, "My location (GPS)"));
  const online = el("button", { type: "button", class: "big" }, "Go online");
  const note = el("p", { class: "muted", "aria-live": "polite" });
  const error = el("div", { class: "alert error hidden", role: "alert" });
  const offerBox = el("div");
  const orderBox = el("div");
  root.replaceChildren(
    el("div", { class: "card" },
      el("label", { for: modeId }, "Location"), mode,
      el("div", { class: "row" }, el("div", {}, lat.label, lat.input), el("div", {}, lon.label, lon.input)),
      speed.label, speed.input, online, note),
    error, offerBox, orderBox);

  let socket = null;
  let position = null;
  let offer = null;
  let order = null;
  let timer = null;
  let countdown = null;
  let watch = null;

  function send(message) {
    if (!socket || !socket.send(message)) showFailure("Not connected; trying again…");
  }

  function showFailure(text) {
    error.textContent = text;
    error.classList.toggle("hidden", !text);
  }

  function report() {
    if (position) send({ type: "location", lat: position.lat, lon: position.lon, ts: Date.now() });
  }

  function tick() {
    if (mode.value === "drive" && order && position) {
      const target = order.status === "picked_up" ? order.dropoff : order.pickup;
      const step = (parseFloat(speed.input.value) || 30) / 3.6 * (REPORT_EVERY_MS / 1000);
      position = moveToward(position, target, step);
      note.textContent = position.arrived
        ? (order.status === "picked_up" ? "At the door." : "At the kitchen.")
        : `Driving to the ${order.status === "picked_up" ? "customer" : "kitchen"}…`;
    }
    report();
  }

  function renderOffer() {
    clearInterval(countdown);
    offerBox.replaceChildren();
    if (!offer) return;
    const seconds = el("span", { class: "countdown", "data-testid": "countdown" });
    const update = () => {
      const left = Math.max(0, Math.ceil((new Date(offer.expires_at) - Date.now()) / 1000));
      seconds.textContent = `${left} s`;
    };
    update();
    countdown = setInterval(update, 250);
    offerBox.append(el("section", { class: "card offer", "aria-label": "New delivery offer" },
      el("h2", {}, `Offer · order ${shortId(offer.order_id)}`),
      el("p", {}, "Answer within ", seconds),
      el("p", { class: "muted" }, `Pickup ${offer.pickup.lat.toFixed(4)}, ${offer.pickup.lon.toFixed(4)} → dropoff ${offer.dropoff.lat.toFixed(4)}, ${offer.dropoff.lon.toFixed(4)}`),
      el("div", { class: "row" },
        el("button", { type: "button", onclick: () => send({ type: "accept_offer", offer_id: offer.offer_id }) }, "Accept"),
        el("button", { type: "button", class: "secondary", onclick: () => { send({ type: "decline_offer", offer_id: offer.offer_id }); offer = null; renderOffer(); } }, "Decline"))));
  }

  function renderOrder() {
    orderBox.replaceChildren();
    if (!order) return;
    const finished = ["delivered", "cancelled", "rejected"].includes(order.status);
    orderBox.append(el("section", { class: "card", "aria-label": "Your delivery", "data-status": order.status },
      el("h2", {}, `Delivery ${shortId(order.id)} · ${order.status.replace("_", " ")}`),
      el("p", {}, order.items.map((i) => `${i.quantity} × ${i.name}`).join(", "), " · ", money(order.total_cents)),
      el("p", { class: "muted" }, order.dropoff_address),
      finished ? null : el("div", { class: "row" },
        el("button", { type: "button", onclick: () => send({ type: "picked_up", order_id: order.id }) }, "Picked up"),
        el("button", { type: "button", onclick: () => send({ type: "delivered", order_id: order.id }) }, "Delivered"))));
    if (finished) setTimeout(() => { if (order && ["delivered", "cancelled", "rejected"].includes(order.status)) { order = null; renderOrder(); } }, 4000);
  }

  function goOnline() {
    position = { lat: parseFloat(lat.input.value), lon: parseFloat(lon.input.value) };
    if (mode.value === "gps" && navigator.geolocation) {
      watch = navigator.geolocation.watchPosition(
        (fix) => { position = { lat: fix.coords.latitude, lon: fix.coords.longitude }; report(); },
        (failure) => showFailure(`Location unavailable: ${failure.message}`),
        { enableHighAccuracy: true });
    }
    statusNode.classList.remove("hidden");
    socket = liveSocket("/ws/driver", session.token, {
      onStatus: (state, detail) => statusBadge(statusNode, state, detail),
      onOpen() {
        showFailure("");
        send({ type: "availability", available: true });
        report();
      },
      onMessage(message) {
        switch (message.type) {
          case "offer": offer = message; renderOffer(); break;
          case "offer_expired":
            if (offer && offer.offer_id === message.offer_id) { offer = null; renderOffer(); note.textContent = "The offer expired."; }
            break;
          case "assigned": offer = null; renderOffer(); order = message.order; renderOrder(); break;
          case "order_update": order = message.order; renderOrder(); break;
          case "error": showFailure(message.message); break;
        }
      },
    });
    timer = setInterval(tick, REPORT_EVERY_MS);
    online.textContent = "Go offline";
    note.textContent = "Online: waiting for offers.";
  }

  function goOffline() {
    send({ type: "availability", available: false });
    clearInterval(timer);
    if (watch !== null) navigator.geolocation.clearWatch(watch);
    socket.stop();
    socket = null;
    online.textContent = "Go online";
    note.textContent = "Offline.";
    statusNode.classList.add("hidden");
  }

  online.addEventListener("click", () => (socket ? goOffline() : goOnline()));
}

const session = getSession(ROLE);
if (session) start(session);
else mountAuth(root, ROLE, start);
