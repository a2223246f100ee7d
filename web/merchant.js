// The merchant's live order board: New / Accepted / Ready / Out for delivery / Done today, a
// notice of webhooks that fail or were disabled, and a map of the kitchen, the streets around it
// and where its open orders go.

import { api, clearSession, clock, el, field, liveSocket, money, mountAuth, pageSession, shortId, showError, statusBadge } from "/assets/common.js";
import { MapView, addressPicker, mapInfo } from "/assets/map.js";

const ROLE = "merchant";
const root = document.getElementById("app");
const statusNode = document.getElementById("status");
const logout = document.getElementById("logout");

const COLUMNS = [
  ["new", "New"],
  ["accepted", "Accepted"],
  ["ready", "Ready"],
  ["out", "Out for delivery"],
  ["done", "Done today"],
];

/** How often the webhooks' health is read again. */
const WEBHOOKS_REFRESH_MS = 60000;

/** A moment as the clock time today, or the date and time before. */
function since(iso) {
  const at = new Date(iso);
  return at.toDateString() === new Date().toDateString()
    ? clock(iso)
    : at.toLocaleString([], { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });
}

/** What is wrong with a webhook endpoint, in a sentence; null when nothing is. */
function webhookProblem(webhook) {
  if (webhook.disabled_at) {
    return `${webhook.url} was disabled ${since(webhook.disabled_at)}: ${webhook.disabled_reason || "no reason given"}. Register it again once it works.`;
  }
  if (webhook.failing_since) {
    const last = webhook.last_delivery;
    const answer = last?.status_code ? ` (last answer: HTTP ${last.status_code})` : last?.last_error ? ` (${last.last_error})` : "";
    return `${webhook.url} has been failing since ${since(webhook.failing_since)}${answer}; it is disabled after 5 days of failures.`;
  }
  return null;
}

function columnOf(order) {
  switch (order.status) {
    case "placed": return "new";
    case "accepted": return "accepted";
    case "ready": return "ready";
    case "picked_up": return "out";
    default: return "done";
  }
}

/** A short chime for a new order (WebAudio; no sound file). */
let audio = null;
function chime() {
  try {
    audio ??= new AudioContext();
    const now = audio.currentTime;
    for (const [i, frequency] of [880, 1320].entries()) {
      const osc = audio.createOscillator();
      const gain = audio.createGain();
      osc.frequency.value = frequency;
      gain.gain.setValueAtTime(0.0001, now + i * 0.18);
      gain.gain.exponentialRampToValueAtTime(0.2, now + i * 0.18 + 0.02);
      gain.gain.exponentialRampToValueAtTime(0.0001, now + i * 0.18 + 0.3);
      osc.connect(gain).connect(audio.destination);
      osc.start(now + i * 0.18);
      osc.stop(now + i * 0.18 + 0.32);
    }
  } catch { /* no audio: the highlight still shows */ }
}

function start(session) {
  logout.classList.remove("hidden");
  logout.onclick = () => { clearSession(ROLE); location.reload(); };
  loadMerchants(session);
}

async function loadMerchants(session) {
  try {
    const [{ merchants }, info, regions] = await Promise.all([
      api("/api/v1/me/merchants", { token: session.token }),
      mapInfo(session.token),
      api("/api/v1/regions").catch(() => ({ type: "FeatureCollection", features: [] })),
    ]);
    if (merchants.length === 0) openKitchen(session, info, regions);
    else board(session, merchants, info, regions);
  } catch (error) {
    root.replaceChildren(el("div", { class: "alert error", role: "alert" }, error.message));
  }
}

/**
 * First visit: open a kitchen and its menu. Its address is typed with suggestions when the engine
 * has map data, else given as coordinates (prefilled with a spot in the demo city).
 */
function openKitchen(session, info, regions) {
  const name = field("Kitchen name", { name: "name", value: "Demo Kitchen", required: true });
  const mapBox = el("div", { class: "board-map" });
  const map = info.geocoding ? new MapView(mapBox, regions, { info, token: session.token, label: "Map: click to pick the kitchen's place" }) : null;
  const b = info.bounds;
  const address = addressPicker({
    label: "Address", info, token: session.token, map, marker: ["pickup", "Kitchen"],
    noun: "kitchen's address", at: "The kitchen is at",
    near: b ? { lat: (b.south + b.north) / 2, lon: (b.west + b.east) / 2 } : null,
    initial: info.geocoding ? null : { lat: 40.7484, lon: -73.9857, address: "350 5th Ave" },
  });
  const menuId = "menu-lines";
  const menu = el("textarea", { id: menuId, rows: 4 }, "Ramen kit, 12.50\nGyoza (6), 5.99\nMiso soup, 3.50");
  const error = el("div", { class: "alert error hidden", role: "alert" });
  const submit = el("button", { type: "submit" }, "Open kitchen");
  const form = el("form", { class: "card" },
    el("h2", {}, "Open your kitchen"),
    name.label, name.input, address.node, map ? mapBox : "",
    el("label", { for: menuId }, "Menu (one item per line: name, price)"), menu,
    error, submit);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    showError(error, null);
    try {
      const items = menu.value.split("\n").map((line) => line.trim()).filter(Boolean).map((line) => {
        const cut = line.lastIndexOf(",");
        const price = Math.round(parseFloat(line.slice(cut + 1)) * 100);
        if (cut < 0 || !Number.isFinite(price)) throw new Error(`Cannot read the price in "${line}".`);
        return { name: line.slice(0, cut).trim(), price_cents: price };
      });
      const where = await address.resolve();
      const merchant = await api("/api/v1/merchants", { method: "POST", token: session.token, body: {
        name: name.input.value, address: where.address, location: { lat: where.lat, lon: where.lon },
      } });
      await api(`/api/v1/merchants/${merchant.id}/menu`, { method: "PUT", token: session.token, body: { items } });
      loadMerchants(session);
    } catch (e) {
      showError(error, e);
    }
  });
  root.replaceChildren(form);
}

function board(session, merchants, info, regions) {
  const orders = new Map();
  const fresh = new Set();
  const error = el("div", { class: "alert error hidden", role: "alert" });
  const lists = new Map();
  const grid = el("div", { class: "board" }, COLUMNS.map(([key, title]) => {
    const list = el("div", { "data-column": key });
    lists.set(key, list);
    return el("section", { class: "column", "aria-label": title }, el("h2", {}, title, " ", el("span", { class: "pill", "data-count": key }, "0")), list);
  }));
  const mapBox = el("div", { class: "board-map" });
  const hooks = el("div", { class: "alert warn hidden", role: "status", "data-testid": "webhook-notice" });
  root.replaceChildren(
    el("p", { class: "muted" }, "Kitchens: ", merchants.map((m) => `${m.name} (${m.address})`).join(", ")),
    hooks, error, grid, mapBox);
  statusNode.classList.remove("hidden");
  const map = new MapView(mapBox, regions, { info, token: session.token, label: "Map: your kitchen and where its orders go" });
  for (const merchant of merchants) map.marker(`kitchen-${merchant.id}`, merchant.location.lat, merchant.location.lon, merchant.name, "kitchen");
  /** The orders whose doors are on the map. */
  const onMap = new Set();

  /** Lists the kitchens' webhooks that fail or were disabled; hidden when all are well. */
  async function refreshWebhooks() {
    const problems = [];
    for (const merchant of merchants) {
      try {
        const { webhooks } = await api(`/api/v1/merchants/${merchant.id}/webhooks`, { token: session.token });
        for (const webhook of webhooks) {
          const problem = webhookProblem(webhook);
          if (problem) problems.push(merchants.length > 1 ? `${merchant.name}: ${problem}` : problem);
        }
      } catch { /* keep the notice as it was; the next round tries again */ return; }
    }
    hooks.replaceChildren();
    hooks.classList.toggle("hidden", problems.length === 0);
    if (problems.length) {
      hooks.append(el("strong", {}, problems.length === 1 ? "A webhook needs attention" : "Webhooks need attention"),
        el("ul", {}, problems.map((problem) => el("li", {}, problem))));
    }
  }
  refreshWebhooks();
  setInterval(refreshWebhooks, WEBHOOKS_REFRESH_MS);

  const socket = liveSocket("/ws/merchant", session.token, {
    onStatus: (state, detail) => statusBadge(statusNode, state, detail),
    onMessage(message) {
      if (message.type === "board") {
        // A (re)connect: the open orders as they are now; keep today's finished ones.
        for (const [id, order] of orders) if (columnOf(order) !== "done") orders.delete(id);
        for (const order of message.orders) orders.set(order.id, order);
        render();
      } else if (message.type === "order_update") {
        const isNew = !orders.has(message.order.id) && message.order.status === "placed";
        orders.set(message.order.id, message.order);
        if (isNew) { fresh.add(message.order.id); chime(); }
        render();
      } else if (message.type === "error") {
        showError(error, new Error(message.message));
      }
    },
  });

  function send(message) {
    showError(error, null);
    if (!socket.send(message)) showError(error, new Error("Not connected; try again in a moment."));
  }

  function card(order) {
    const actions = el("div", { class: "actions" });
    if (order.status === "placed") {
      const prepId = `prep-${order.id}`;
      const prep = el("input", { id: prepId, type: "number", min: 1, max: 240, value: 15 });
      actions.append(
        el("div", {}, el("label", { for: prepId }, "Prep (min)"), prep),
        el("button", { type: "button", onclick: () => send({ type: "accept_order", order_id: order.id, prep_minutes: parseInt(prep.value, 10) }) }, "Accept"),
        el("button", { type: "button", class: "danger", onclick: () => {
          const reason = prompt("Why reject this order?", "Out of stock");
          if (reason !== null) send({ type: "reject_order", order_id: order.id, reason });
        } }, "Reject"));
    } else if (order.status === "accepted") {
      actions.append(el("button", { type: "button", onclick: () => send({ type: "order_ready", order_id: order.id }) }, "Mark ready"));
    }
    const dispatch = {
      unassigned: "", searching: "Finding a driver…", offered: "Offering to a driver…", assigned: "Driver on the way",
    }[order.dispatch_status];
    const node = el("article", { class: "order" + (fresh.has(order.id) ? " fresh" : ""), "data-order": order.id, "data-status": order.status },
      el("h3", {}, `${shortId(order.id)} · ${money(order.total_cents)}`),
      el("div", { class: "muted" }, `Placed ${clock(order.created_at)}`, order.prep_minutes ? ` · prep ${order.prep_minutes} min` : ""),
      el("ul", {}, order.items.map((item) => el("li", {}, `${item.quantity} × ${item.name}`))),
      dispatch && columnOf(order) !== "done" ? el("div", { class: "pill" }, dispatch) : null,
      columnOf(order) === "done" ? el("div", { class: "pill" }, order.status.replace("_", " ")) : null,
      actions);
    return node;
  }

  /** A marker at the door of every open order; the map zooms to hold them and the kitchens. */
  function drawDoors() {
    const open = [...orders.values()].filter((order) => columnOf(order) !== "done");
    const ids = new Set(open.map((order) => order.id));
    let changed = false;
    for (const id of onMap) {
      if (!ids.has(id)) { map.removeMarker(`order-${id}`); onMap.delete(id); changed = true; }
    }
    for (const order of open) {
      if (onMap.has(order.id)) continue;
      map.marker(`order-${order.id}`, order.dropoff.lat, order.dropoff.lon, shortId(order.id), "dropoff");
      onMap.add(order.id);
      changed = true;
    }
    if (changed) map.refit();
  }

  function render() {
    const today = new Date().toDateString();
    for (const [key] of COLUMNS) lists.get(key).replaceChildren();
    const sorted = [...orders.values()].sort((a, b) => a.created_at.localeCompare(b.created_at));
    for (const order of sorted) {
      const column = columnOf(order);
      if (column === "done" && new Date(order.updated_at).toDateString() !== today) continue;
      lists.get(column).append(card(order));
    }
    for (const [key] of COLUMNS) {
      document.querySelector(`[data-count="${key}"]`).textContent = lists.get(key).children.length;
    }
    drawDoors();
    // Highlight a new order once.
    setTimeout(() => fresh.clear(), 5000);
  }
}

// A session handed back by the OpenID provider (#token=…) counts as this tab's own.
const session = await pageSession(ROLE);
if (session) start(session);
else mountAuth(root, ROLE, start);
