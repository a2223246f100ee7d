// The driver app: go online, share a location (the phone's, or a simulated drive along the
// route the engine sent, else a straight line), answer offers before their countdown ends, pick
// up and deliver; a map of the streets, the kitchen, the door and the route.

import { api, clearSession, el, field, getSession, liveSocket, money, mountAuth, shortId, statusBadge } from "/assets/common.js";
import { MapView, mapInfo } from "/assets/map.js";

const ROLE = "driver";
const root = document.getElementById("app");
const statusNode = document.getElementById("status");
const logout = document.getElementById("logout");
const EARTH_M = 6371008.8;
/** How often the app reports its location while driving. */
const REPORT_EVERY_MS = 1000;

function distanceM(from, to) {
  const dLat = (to.lat - from.lat) * Math.PI / 180 * EARTH_M;
  const dLon = (to.lon - from.lon) * Math.PI / 180 * EARTH_M * Math.cos(from.lat * Math.PI / 180);
  return Math.hypot(dLat, dLon);
}

function moveToward(from, to, metres) {
  const distance = distanceM(from, to);
  if (distance <= metres) return { lat: to.lat, lon: to.lon, arrived: true };
  const f = metres / distance;
  return { lat: from.lat + (to.lat - from.lat) * f, lon: from.lon + (to.lon - from.lon) * f, arrived: false };
}

/** "Kamppi 1 → Mannerheimintie 5", or the coordinates when the engine sent no address. */
function place(address, point) {
  return address || `${point.lat.toFixed(4)}, ${point.lon.toFixed(4)}`;
}

function minutes(seconds) {
  return Math.max(1, Math.round(seconds / 60));
}

async function start(session) {
  logout.classList.remove("hidden");
  logout.onclick = () => { clearSession(ROLE); location.reload(); };

  const [info, regions] = await Promise.all([
    mapInfo(session.token),
    api("/api/v1/regions").catch(() => ({ type: "FeatureCollection", features: [] })),
  ]);
  // Start in the middle of the city the engine has map data for, else in the demo city.
  const b = info.bounds;
  const home = b ? { lat: (b.south + b.north) / 2, lon: (b.west + b.east) / 2 } : { lat: 40.75, lon: -73.985 };
  const lat = field("Start latitude", { name: "lat", type: "number", step: "any", value: home.lat.toFixed(4) });
  const lon = field("Start longitude", { name: "lon", type: "number", step: "any", value: home.lon.toFixed(4) });
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
  const mapBox = el("div");
  root.replaceChildren(
    el("div", { class: "card" },
      el("label", { for: modeId }, "Location"), mode,
      el("div", { class: "row" }, el("div", {}, lat.label, lat.input), el("div", {}, lon.label, lon.input)),
      speed.label, speed.input, online, note),
    error, offerBox, orderBox, mapBox);
  const map = new MapView(mapBox, regions, { info, token: session.token, label: "Map: you, the kitchen, the door and your route" });
  /** Routes the engine sent, by "order:leg"; `seq` tells a re-route from the route before. */
  const routes = new Map();
  let routeSeq = 0;
  /** Where drive mode goes next: the route's remaining points, then the stop itself. */
  let path = null;

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

  function legOf(current) {
    return current.status === "picked_up" ? "to_dropoff" : "to_pickup";
  }

  /** The way to the current stop: along the engine's route from the point nearest to us. */
  function pathTo(current) {
    const target = current.status === "picked_up" ? current.dropoff : current.pickup;
    const route = routes.get(`${current.id}:${legOf(current)}`);
    const key = `${current.id}:${legOf(current)}:${route ? route.seq : "straight"}`;
    if (path && path.key === key) return path;
    const points = route ? route.points.map(([pLat, pLon]) => ({ lat: pLat, lon: pLon })) : [];
    let from = 0;
    for (let i = 1; i < points.length; i += 1) {
      if (distanceM(position, points[i]) < distanceM(position, points[from])) from = i;
    }
    path = { key, points: [...points.slice(from), target] };
    return path;
  }

  function tick() {
    if (mode.value === "drive" && order && position && !["delivered", "cancelled", "rejected"].includes(order.status)) {
      const way = pathTo(order);
      let budget = (parseFloat(speed.input.value) || 30) / 3.6 * (REPORT_EVERY_MS / 1000);
      while (budget > 0 && way.points.length > 0) {
        const next = way.points[0];
        const moved = moveToward(position, next, budget);
        budget -= distanceM(position, moved);
        position = { lat: moved.lat, lon: moved.lon };
        if (!moved.arrived) break;
        way.points.shift();
      }
      note.textContent = way.points.length === 0
        ? (order.status === "picked_up" ? "At the door." : "At the kitchen.")
        : `Driving to the ${order.status === "picked_up" ? "customer" : "kitchen"}…`;
    }
    if (position) {
      map.marker("driver", position.lat, position.lon, "You");
      map.trimRoute(position.lat, position.lon);
    }
    report();
  }

  /** The map shows the stops of the offer or the delivery, and the route of the delivery. */
  function drawStops() {
    const shown = order && !["delivered", "cancelled", "rejected"].includes(order.status) ? order : offer;
    if (!shown) {
      map.removeMarker("pickup");
      map.removeMarker("dropoff");
      map.clearRoute();
      return;
    }
    map.marker("pickup", shown.pickup.lat, shown.pickup.lon, "Kitchen");
    map.marker("dropoff", shown.dropoff.lat, shown.dropoff.lon, "Door");
    const id = shown.id ?? shown.order_id;
    const route = shown === order ? routes.get(`${id}:${legOf(order)}`) : null;
    if (route) map.showRoute(route.points, { leg: route.leg, label: route.leg === "to_pickup" ? "Your route to the kitchen" : "Your route to the door" });
    else map.clearRoute();
    map.refit();
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
      el("p", { class: "offer-route", "data-testid": "offer-route" },
        `Pickup ${place(offer.pickup_address, offer.pickup)} → dropoff ${place(offer.dropoff_address, offer.dropoff)}`),
      Number.isFinite(offer.pickup_eta_seconds)
        ? el("p", { "data-testid": "offer-eta" }, `About ${minutes(offer.pickup_eta_seconds)} min to the pickup`)
        : null,
      el("div", { class: "row" },
        el("button", { type: "button", onclick: () => send({ type: "accept_offer", offer_id: offer.offer_id }) }, "Accept"),
        el("button", { type: "button", class: "secondary", onclick: () => { send({ type: "decline_offer", offer_id: offer.offer_id }); offer = null; renderOffer(); drawStops(); } }, "Decline"))));
  }

  function renderOrder() {
    orderBox.replaceChildren();
    if (!order) return;
    const finished = ["delivered", "cancelled", "rejected"].includes(order.status);
    orderBox.append(el("section", { class: "card", "aria-label": "Your delivery", "data-status": order.status },
      el("h2", {}, `Delivery ${shortId(order.id)} · ${order.status.replace("_", " ")}`),
      el("p", {}, order.items.map((i) => `${i.quantity} × ${i.name}`).join(", "), " · ", money(order.total_cents)),
      el("p", { class: "muted" }, `Pickup ${place(order.pickup_address, order.pickup)} → dropoff ${place(order.dropoff_address, order.dropoff)}`),
      finished ? null : el("div", { class: "row" },
        el("button", { type: "button", onclick: () => send({ type: "picked_up", order_id: order.id }) }, "Picked up"),
        el("button", { type: "button", onclick: () => send({ type: "delivered", order_id: order.id }) }, "Delivered"))));
    if (finished) {
      for (const leg of ["to_pickup", "to_dropoff"]) routes.delete(`${order.id}:${leg}`);
      setTimeout(() => { if (order && ["delivered", "cancelled", "rejected"].includes(order.status)) { order = null; renderOrder(); drawStops(); } }, 4000);
    }
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
          case "offer": offer = message; renderOffer(); drawStops(); break;
          case "offer_expired":
            if (offer && offer.offer_id === message.offer_id) { offer = null; renderOffer(); drawStops(); note.textContent = "The offer expired."; }
            break;
          case "assigned": offer = null; renderOffer(); order = message.order; renderOrder(); drawStops(); break;
          case "order_update": order = message.order; renderOrder(); drawStops(); break;
          case "route":
            routeSeq += 1;
            routes.set(`${message.order_id}:${message.leg}`, { ...message, seq: routeSeq });
            if (order && order.id === message.order_id) drawStops();
            break;
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
