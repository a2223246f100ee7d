// Tracking one order: its status timeline, a live map (regions, pickup, dropoff, the driver),
// and the ETA.

import { ApiError, api, clock, el, getSession, liveSocket, money, mountAuth, shortId, statusBadge } from "/assets/common.js";
import { MapView } from "/assets/map.js";

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
  const regions = await api("/api/v1/regions");
  const title = el("h2", {}, `Order ${shortId(order.id)}`);
  const summary = el("p", { class: "muted" });
  const timeline = el("ol", { class: "timeline", "aria-label": "Order status" });
  const dispatch = el("p", { "data-testid": "dispatch" });
  const eta = el("p", { "data-testid": "eta", class: "muted" });
  const mapBox = el("div");
  root.replaceChildren(el("div", { class: "card" }, title, summary, timeline, dispatch, eta), mapBox);
  const map = new MapView(mapBox, regions);
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
    map.marker("pickup", current.pickup.lat, current.pickup.lon, "Kitchen");
    map.marker("dropoff", current.dropoff.lat, current.dropoff.lon, "You");
    if (current.status === "delivered") eta.textContent = "Enjoy your meal!";
  }
  show(order);

  liveSocket(`/ws/orders/${order.id}`, session.token, {
    onStatus: (state, detail) => statusBadge(statusNode, state, detail),
    onMessage(message) {
      if (message.type === "order_update") show(message.order);
      else if (message.type === "driver_location") {
        map.marker("driver", message.lat, message.lon, "Driver");
        if (order.status !== "delivered") {
          eta.textContent = `Arriving in about ${Math.max(1, Math.round(message.eta_seconds / 60))} min`;
        }
      }
    },
  });
}

const session = anySession();
if (session) start(session);
else mountAuth(root, "customer", start);
