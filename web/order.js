// The customer's checkout: where to deliver, a kitchen nearby, its menu, a test card, pay.

import { api, clearSession, el, field, getSession, money, mountAuth, showError } from "/assets/common.js";

const ROLE = "customer";
const root = document.getElementById("app");
const logout = document.getElementById("logout");

const CARDS = [
  ["pm_card_visa", "Visa (test card that pays)"],
  ["pm_card_chargeDeclined", "Declined card (test)"],
  ["pm_card_chargeDeclinedInsufficientFunds", "Insufficient funds (test)"],
];

function start(session) {
  logout.classList.remove("hidden");
  logout.onclick = () => { clearSession(ROLE); location.reload(); };

  const address = field("Deliver to (address)", { name: "address", value: "20 W 34th St", required: true });
  const lat = field("Latitude", { name: "lat", type: "number", step: "any", value: "40.7516" });
  const lon = field("Longitude", { name: "lon", type: "number", step: "any", value: "-73.9755" });
  const find = el("button", { type: "submit" }, "Find kitchens nearby");
  const error = el("div", { class: "alert error hidden", role: "alert" });
  const results = el("div", { "aria-live": "polite" });
  const where = el("form", { class: "card", "aria-label": "Delivery address" },
    address.label, address.input,
    el("div", { class: "row" }, el("div", {}, lat.label, lat.input), el("div", {}, lon.label, lon.input)),
    el("div", { class: "row" }, find));
  root.replaceChildren(el("h2", {}, "Where should we deliver?"), where, error, results);

  where.addEventListener("submit", async (event) => {
    event.preventDefault();
    showError(error, null);
    try {
      const found = await api(`/api/v1/merchants?lat=${lat.input.value}&lon=${lon.input.value}&radius_m=10000`);
      results.replaceChildren(el("h2", {}, "Kitchens nearby"));
      if (found.merchants.length === 0) results.append(el("p", { class: "muted" }, "No kitchen delivers here yet."));
      for (const merchant of found.merchants) {
        results.append(el("div", { class: "card" },
          el("strong", {}, merchant.name), " ",
          el("span", { class: "muted" }, `${(merchant.distance_m / 1000).toFixed(1)} km · ${merchant.is_open ? "open" : "closed"}`),
          el("div", { class: "row" }, el("button", {
            type: "button", disabled: !merchant.is_open,
            onclick: () => showMenu(session, merchant, { address, lat, lon }, error, results),
          }, `Order from ${merchant.name}`))));
      }
    } catch (e) {
      showError(error, e);
    }
  });
}

async function showMenu(session, merchant, where, error, results) {
  showError(error, null);
  let menu;
  try {
    menu = await api(`/api/v1/merchants/${merchant.id}/menu`);
  } catch (e) {
    showError(error, e);
    return;
  }
  const quantities = new Map();
  const subtotal = el("strong", {}, money(0));
  const lines = menu.items.map((item) => {
    const id = `qty-${item.id}`;
    const input = el("input", { id, type: "number", min: 0, max: 99, value: 0, "data-item": item.name });
    input.addEventListener("input", () => {
      quantities.set(item.id, Math.max(0, parseInt(input.value || "0", 10)));
      let total = 0;
      for (const i of menu.items) total += (quantities.get(i.id) || 0) * i.price_cents;
      subtotal.textContent = money(total);
      key = null; // a changed basket is a new checkout
    });
    return el("div", { class: "row" },
      el("label", { for: id }, `${item.name} — ${money(item.price_cents)}`), input);
  });
  const cardId = "payment-card";
  const card = el("select", { id: cardId, name: "payment_method" }, CARDS.map(([value, label]) => el("option", { value }, label)));
  card.addEventListener("change", () => { key = null; });
  const pay = el("button", { type: "submit", class: "big" }, "Pay and order");
  const message = el("div", { class: "alert error hidden", role: "alert", "data-testid": "checkout-error" });
  const form = el("form", { class: "card", "aria-label": `Menu of ${merchant.name}` },
    el("h2", {}, merchant.name), lines,
    el("p", {}, "Items: ", subtotal, el("span", { class: "muted" }, " + delivery fee")),
    el("label", { for: cardId }, "Pay with"), card, message, pay);
  results.replaceChildren(form);

  // One Idempotency-Key per checkout attempt: pressing Pay twice orders once.
  let key = null;
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    showError(message, null);
    const items = menu.items
      .filter((item) => (quantities.get(item.id) || 0) > 0)
      .map((item) => ({ menu_item_id: item.id, quantity: quantities.get(item.id) }));
    if (items.length === 0) {
      showError(message, new Error("Choose at least one item."));
      return;
    }
    key ??= crypto.randomUUID();
    pay.disabled = true;
    try {
      const order = await api("/api/v1/orders", {
        method: "POST", token: session.token, headers: { "Idempotency-Key": key },
        body: {
          merchant_id: merchant.id, items, payment_method: card.value,
          dropoff: { lat: parseFloat(where.lat.input.value), lon: parseFloat(where.lon.input.value), address: where.address.input.value },
        },
      });
      location.assign(`/track/${order.id}`);
    } catch (e) {
      const explained = {
        payment_declined: "Your card was declined. No order was placed and nothing was charged.",
        insufficient_funds: "Your card was declined for insufficient funds. No order was placed.",
      }[e.code];
      showError(message, explained ? new Error(explained) : e);
      if (e.code === "payment_declined" || e.code === "insufficient_funds") key = null;
    } finally {
      pay.disabled = false;
    }
  });
}

const session = getSession(ROLE);
if (session) start(session);
else mountAuth(root, ROLE, start);
