// The customer's checkout: where to deliver (an address with suggestions, or a point picked on
// the map), a kitchen nearby, its menu, a test card, order updates on WhatsApp if wanted, pay.

import { api, clearSession, el, money, mountAuth, pageSession, showError } from "/assets/common.js";
import { MapView, addressPicker, mapInfo } from "/assets/map.js";

const ROLE = "customer";
const root = document.getElementById("app");
const logout = document.getElementById("logout");

const CARDS = [
  ["pm_card_visa", "Visa (test card that pays)"],
  ["pm_card_chargeDeclined", "Declined card (test)"],
  ["pm_card_chargeDeclinedInsufficientFunds", "Insufficient funds (test)"],
];

const NYC_DEFAULT = { lat: 40.7516, lon: -73.9755, address: "20 W 34th St" };

/** The middle of the map data's box, if there is one. */
function centreOf(bounds) {
  return bounds ? { lat: (bounds.south + bounds.north) / 2, lon: (bounds.west + bounds.east) / 2 } : null;
}

/** A map for picking the point, when the engine has map data (else the page stays as before). */
function pickingMap(container, regions, info, token) {
  if (!info.geocoding && !info.streets) return null;
  return new MapView(container, regions, { info, token, label: "Map: click to pick the delivery point" });
}

async function start(session) {
  logout.classList.remove("hidden");
  logout.onclick = () => { clearSession(ROLE); location.reload(); };

  const [info, regions] = await Promise.all([
    mapInfo(session.token),
    api("/api/v1/regions").catch(() => ({ type: "FeatureCollection", features: [] })),
  ]);
  const mapBox = el("div");
  const find = el("button", { type: "submit" }, "Find kitchens nearby");
  const error = el("div", { class: "alert error hidden", role: "alert" });
  const results = el("div", { "aria-live": "polite" });
  const where = el("form", { class: "card", "aria-label": "Delivery address" });
  root.replaceChildren(el("h2", {}, "Where should we deliver?"), where, error, results);
  const map = pickingMap(mapBox, regions, info, session.token);
  const picker = addressPicker({
    label: "Deliver to (address)", info, token: session.token, map,
    near: centreOf(info.bounds),
    initial: info.geocoding ? null : NYC_DEFAULT,
  });
  where.append(picker.node);
  if (map) where.append(mapBox);
  where.append(el("div", { class: "row" }, find));

  where.addEventListener("submit", async (event) => {
    event.preventDefault();
    showError(error, null);
    try {
      const place = await picker.resolve();
      const found = await api(`/api/v1/merchants?lat=${place.lat}&lon=${place.lon}&radius_m=10000`);
      results.replaceChildren(el("h2", {}, "Kitchens nearby"));
      if (found.merchants.length === 0) results.append(el("p", { class: "muted" }, "No kitchen delivers here yet."));
      for (const merchant of found.merchants) {
        results.append(el("div", { class: "card" },
          el("strong", {}, merchant.name), " ",
          el("span", { class: "muted" }, `${(merchant.distance_m / 1000).toFixed(1)} km · ${merchant.is_open ? "open" : "closed"}`),
          merchant.address ? el("div", { class: "muted" }, merchant.address) : null,
          el("div", { class: "row" }, el("button", {
            type: "button", disabled: !merchant.is_open,
            onclick: () => showMenu(session, merchant, picker, map, error, results),
          }, `Order from ${merchant.name}`))));
      }
    } catch (e) {
      showError(error, e);
    }
  });
}

async function showMenu(session, merchant, picker, map, error, results) {
  showError(error, null);
  // One Idempotency-Key per checkout attempt: pressing Pay twice orders once.
  let key = null;
  let menu;
  let me = {};
  try {
    [menu, me] = await Promise.all([
      api(`/api/v1/merchants/${merchant.id}/menu`),
      api("/api/v1/me", { token: session.token }).catch(() => ({})),
    ]);
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
  // Order updates on WhatsApp: prefilled from the account, sent for this order when filled in.
  const phoneId = "whatsapp-phone";
  const phone = el("input", {
    id: phoneId, name: "phone", type: "tel", inputmode: "tel", autocomplete: "tel",
    placeholder: "+358…", value: me.phone || "", "aria-describedby": "whatsapp-hint",
  });
  const consentId = "whatsapp-consent";
  const consent = el("input", { id: consentId, name: "notify_whatsapp", type: "checkbox", checked: Boolean(me.notify_whatsapp) });
  phone.addEventListener("input", () => { key = null; });
  consent.addEventListener("change", () => { key = null; });
  const pay = el("button", { type: "submit", class: "big" }, "Pay and order");
  const message = el("div", { class: "alert error hidden", role: "alert", "data-testid": "checkout-error" });
  // The address box above stays where to deliver: its suggestions now favour addresses near this
  // kitchen, and its map shows the kitchen beside the door.
  picker.setNear(merchant.location);
  picker.onChange = () => { key = null; };
  if (map) {
    map.marker("pickup", merchant.location.lat, merchant.location.lon, "Kitchen");
    map.refit();
  }
  const form = el("form", { class: "card", "aria-label": `Menu of ${merchant.name}` },
    el("h2", {}, merchant.name),
    merchant.address ? el("p", { class: "muted" }, merchant.address) : null,
    lines,
    el("p", {}, "Items: ", subtotal, el("span", { class: "muted" }, " + delivery fee")),
    el("label", { for: cardId }, "Pay with"), card,
    el("label", { for: phoneId }, "Phone for order updates (optional)"), phone,
    el("p", { id: "whatsapp-hint", class: "muted" }, "International form: + and the country code, e.g. +358 40 123 4567."),
    el("label", { for: consentId, class: "check" }, consent, "Send me order updates on WhatsApp"),
    message, pay);
  results.replaceChildren(form);

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
    const number = phone.value.trim();
    if (consent.checked && !number) {
      showError(message, new Error("Enter a phone number for WhatsApp updates, or untick the box."));
      phone.focus();
      return;
    }
    // Left unsaid only when there is nothing to say (no number, no consent here or on the
    // account): the account's choice then holds, and it is the one shown.
    const contact = number || consent.checked || me.notify_whatsapp ? { notify_whatsapp: consent.checked } : {};
    if (number) contact.phone = number;
    let place;
    try {
      place = await picker.resolve();
    } catch (e) {
      showError(message, e);
      return;
    }
    key ??= crypto.randomUUID();
    pay.disabled = true;
    try {
      const order = await api("/api/v1/orders", {
        method: "POST", token: session.token, headers: { "Idempotency-Key": key },
        body: {
          merchant_id: merchant.id, items, payment_method: card.value,
          dropoff: { lat: place.lat, lon: place.lon, address: place.address },
          ...contact,
        },
      });
      location.assign(`/track/${order.id}`);
    } catch (e) {
      const explained = {
        invalid_phone: "That phone number cannot be used: write it with + and the country code, e.g. +358 40 123 4567.",
        payment_declined: "Your card was declined. No order was placed and nothing was charged.",
        insufficient_funds: "Your card was declined for insufficient funds. No order was placed.",
      }[e.code];
      showError(message, explained ? new Error(explained) : e);
      if (e.code === "payment_declined" || e.code === "insufficient_funds") key = null;
      if (e.code === "invalid_phone") phone.focus();
    } finally {
      pay.disabled = false;
    }
  });
}

// A session handed back by the OpenID provider (#token=…) counts as this tab's own.
const session = await pageSession(ROLE);
if (session) start(session);
else mountAuth(root, ROLE, start);
