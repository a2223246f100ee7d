// Tracking one order: its status timeline, what we told the customer on WhatsApp, a live map
// (regions and streets, pickup, dropoff, the driver and the route it drives), and the ETA.

import { ApiError, api, clock, el, getSession, liveSocket, money, mountAuth, sessionFromFragment, setSession, shortId, statusBadge } from "/assets/common.js";
import { MapView, mapInfo } from "/assets/map.js";

const root = document.getElementById("app");
const statusNode = document.getElementById("status");
const orderId = decodeURIComponent(location.pathname.split("/")[2] || "");

const STEPS = [
  ["placed", "Order placed"],
  ["accepted", "Kitchen is preparing it"],
  ["ready", "Ready for pickup"],
  ["picked_up", "On the way"],
  ["delivered", "Delivered"],
];
/** What each event's WhatsApp message said, in a word or two. */
const NOTIFIED = {
  "order.accepted": "accepted",
  "order.rejected": "rejected",
  "order.driver_assigned": "driver assigned",
  "order.picked_up": "picked up",
  "order.delivered": "delivered",
  "order.cancelled": "cancelled",
};
/** How long after an order update the line is read again (the message is sent just after). */
const NOTIFIED_FOLLOW_UP_MS = 5000;
/** How often the line is read (WhatsApp reports delivered and read late), and for how many
 * rounds after the order ended. */
const NOTIFIED_REFRESH_MS = 30000;
const NOTIFIED_ROUNDS_AFTER_END = 10;

/**
 * "Notified on WhatsApp: accepted ✓ delivered · picked up ✓ read": the latest WhatsApp message
 * per event, in the order sent, with WhatsApp's own status when it reported one; null when none.
 */
function whatsappLine(notifications) {
  const latest = new Map();
  for (const n of notifications) {
    if (n.channel !== "whatsapp" || n.state === "cancelled") continue;
    latest.delete(n.event); // keeps the map in the order of the latest message per event
    latest.set(n.event, n);
  }
  if (latest.size === 0) return null;
  const parts = [...latest.values()].map((n) => {
    const what = NOTIFIED[n.event] || n.event.replace(/^order\./, "").replace("_", " ");
    let outcome;
    if (n.provider_status === "failed") outcome = "✗ failed";
    else if (n.state === "failed") outcome = "✗ not sent";
    else if (n.state === "pending") outcome = "… sending";
    else outcome = n.provider_status && n.provider_status !== "sent" ? `✓ ${n.provider_status}` : "✓";
    return `${what} ${outcome}`;
  });
  return `Notified on WhatsApp: ${parts.join(" · ")}`;
}

const DISPATCH = {
  unassigned: "Waiting for the kitchen",
  searching: "Finding a driver",
  offered: "Finding a driver",
  assigned: "Driver assigned",
};

function anySession() {
  return getSession("customer") || getSession("merchant") || getSession("driver");
}

async function start(session) {
  let order;
  try {
    order = await api(`/api/v1/orders/${orderId}`, { token: session.token });
  } catch (error) {
    const notFound = error instanceof ApiError && error.status === 404;
    root.replaceChildren(el("div", { class: "alert error", role: "alert", "data-testid": "not-found" },
      notFound ? "Order not found. Check the link, or log in with the account that placed it." : error.message));
    return;
  }
  const [regions, info] = await Promise.all([api("/api/v1/regions"), mapInfo(session.token)]);
  const title = el("h2", {}, `Order ${shortId(order.id)}`);
  const summary = el("p", { class: "muted" });
  const timeline = el("ol", { class: "timeline", "aria-label": "Order status" });
  const dispatch = el("p", { "data-testid": "dispatch" });
  const notified = el("p", { class: "muted notified hidden", "data-testid": "notified" });
  const eta = el("p", { "data-testid": "eta", class: "muted" });
  const places = el("p", { "data-testid": "addresses" });
  const mapBox = el("div");
  const routeNote = el("p", { class: "muted", "data-testid": "route" });
  root.replaceChildren(el("div", { class: "card" }, title, summary, places, timeline, notified, dispatch, eta), mapBox, routeNote);
  const map = new MapView(mapBox, regions, { info, token: session.token, label: "Map of the delivery" });
  statusNode.classList.remove("hidden");

  function show(current) {
    order = current;
    summary.textContent = `${current.items.map((i) => `${i.quantity} × ${i.name}`).join(", ")} · ${money(current.total_cents)}`;
    const reached = new Map(current.events.filter((e) => e.status).map((e) => [e.status, e.at]));
    timeline.replaceChildren();
    if (current.status === "rejected" || current.status === "cancelled") {
      timeline.append(el("li", { class: "done", "data-step": "placed" }, `Order placed · ${clock(current.created_at)}`));
      timeline.append(el("li", { class: "done", "data-step": current.status }, current.status === "rejected" ? "The kitchen could not take this order" : "Cancelled"));
    } else {
      for (const [status, label] of STEPS) {
        const at = reached.get(status);
        timeline.append(el("li", { class: at ? "done" : "", "data-step": status }, at ? `${label} · ${clock(at)}` : label));
      }
    }
    dispatch.textContent = current.status === "delivered" ? "" : DISPATCH[current.dispatch_status] || "";
    places.textContent = `From ${current.pickup_address || "the kitchen"} to ${current.dropoff_address}`;
    map.marker("pickup", current.pickup.lat, current.pickup.lon, "Kitchen");
    map.marker("dropoff", current.dropoff.lat, current.dropoff.lon, "You");
    if (current.status === "delivered") eta.textContent = "Enjoy your meal!";
    if (["delivered", "cancelled", "rejected"].includes(current.status)) {
      map.clearRoute();
      routeNote.textContent = "";
    }
  }

  function showRoute(frame) {
    if (["delivered", "cancelled", "rejected"].includes(order.status)) return;
    if (frame.leg === "to_pickup" && order.status === "picked_up") return; // a late one for the leg done
    const toKitchen = frame.leg === "to_pickup";
    map.showRoute(frame.points, { leg: frame.leg, label: toKitchen ? "The driver's route to the kitchen" : "The driver's route to you" });
    const km = Number.isFinite(frame.distance_m) ? ` · ${(frame.distance_m / 1000).toFixed(1)} km` : "";
    routeNote.textContent = `${toKitchen ? "The driver's route to the kitchen" : "The driver's route to you"}${km}${frame.by_road ? " by road" : " (straight line)"}`;
  }
  /** Reads what was sent about the order into the line under the status; quiet on failure. */
  async function refreshNotified() {
    try {
      const { notifications } = await api(`/api/v1/orders/${order.id}/notifications`, { token: session.token });
      const line = whatsappLine(notifications);
      notified.textContent = line || "";
      notified.classList.toggle("hidden", !line);
    } catch { /* the line stays as it was */ }
  }
  let followUp = null;
  function notifiedAfterUpdate() {
    refreshNotified();
    clearTimeout(followUp);
    followUp = setTimeout(refreshNotified, NOTIFIED_FOLLOW_UP_MS);
  }
  let roundsAfterEnd = 0;
  const refresher = setInterval(() => {
    if (document.visibilityState === "visible") refreshNotified();
    if (["delivered", "cancelled", "rejected"].includes(order.status)) {
      roundsAfterEnd += 1;
      if (roundsAfterEnd >= NOTIFIED_ROUNDS_AFTER_END) clearInterval(refresher);
    }
  }, NOTIFIED_REFRESH_MS);

  show(order);
  refreshNotified();

  liveSocket(`/ws/orders/${order.id}`, session.token, {
    onStatus: (state, detail) => statusBadge(statusNode, state, detail),
    onMessage(message) {
      if (message.type === "order_update") {
        show(message.order);
        notifiedAfterUpdate();
      }
      else if (message.type === "route" && (!message.order_id || message.order_id === order.id)) showRoute(message);
      else if (message.type === "driver_location") {
        map.marker("driver", message.lat, message.lon, "Driver");
        map.trimRoute(message.lat, message.lon);
        if (order.status !== "delivered") {
          eta.textContent = `Arriving in about ${Math.max(1, Math.round(message.eta_seconds / 60))} min`;
        }
      }
    },
  });
}

/**
 * The tracking link the WhatsApp bot sends carries a sign-in token in its fragment: it becomes
 * this tab's customer session (common.js reads it and clears the address bar).
 */
async function sessionFromLink() {
  const session = await sessionFromFragment();
  if (session) setSession("customer", session);
  return session;
}

const session = (await sessionFromLink()) || anySession();
if (session) start(session);
else mountAuth(root, "customer", start);
