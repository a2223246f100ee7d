// Paying a basket chosen in the WhatsApp chat: the payment link's kitchen, lines and total, where
// it goes and until when the link lasts, a choice of test cards, and Pay. No login: the link's
// token is the key. The order's updates follow in the chat.

import { api, clock, el, money, shortId, showError } from "/assets/common.js";

const root = document.getElementById("app");
const token = decodeURIComponent(location.pathname.split("/")[2] || "");
const path = `/api/v1/pay/${encodeURIComponent(token)}`;

/** What a declined card tells the customer. */
const DECLINED = {
  payment_declined: "Your card was declined. No order was placed and nothing was charged. Choose another card.",
  insufficient_funds: "Your card was declined for insufficient funds. No order was placed. Choose another card.",
};

/** The link cannot be paid (unknown, used, expired): its message, and no form. */
function closed(error) {
  root.replaceChildren(el("div", { class: "card" },
    el("h2", {}, error.status === 404 ? "Payment link not found" : "This payment link is closed"),
    el("div", { class: error.code === "pay_link_used" ? "alert info" : "alert error", role: "alert", "data-testid": "pay-closed" }, error.message),
    el("p", { class: "muted" }, "Go back to the WhatsApp chat to order again.")));
}

function placed(order) {
  root.replaceChildren(el("div", { class: "card paid", "data-testid": "pay-done" },
    el("h2", {}, `Order ${shortId(order.id)} placed`),
    el("p", {}, "We'll keep you posted on WhatsApp."),
    el("p", { class: "muted" }, `Paid ${money(order.total_cents)}, to ${order.dropoff_address}.`)));
}

function basketTable(link) {
  const rows = link.items.map((item) => el("tr", {},
    el("td", {}, `${item.quantity} × ${item.name}`),
    el("td", { class: "amount" }, money(item.quantity * item.unit_price_cents))));
  return el("table", { class: "basket" },
    el("tbody", {}, rows,
      el("tr", { class: "sum" }, el("td", {}, "Items"), el("td", { class: "amount" }, money(link.subtotal_cents))),
      el("tr", {}, el("td", {}, "Delivery fee"), el("td", { class: "amount" }, money(link.delivery_fee_cents))),
      el("tr", { class: "total" }, el("th", { scope: "row" }, "Total"), el("td", { class: "amount", "data-testid": "pay-total" }, money(link.total_cents)))));
}

function render(link) {
  const cards = link.payment_methods.map((method, i) => {
    const id = `card-${i}`;
    return el("label", { for: id, class: "check" },
      el("input", { id, type: "radio", name: "payment_method", value: method.id, checked: i === 0 }),
      method.label);
  });
  const message = el("div", { class: "alert error hidden", role: "alert", "data-testid": "pay-error" });
  const pay = el("button", { type: "submit", class: "big" }, `Pay ${money(link.total_cents)}`);
  const form = el("form", { class: "card", "aria-label": "Pay your order" },
    el("h2", {}, link.merchant_name),
    basketTable(link),
    el("p", {}, "Deliver to: ", el("strong", {}, link.dropoff_address)),
    el("p", { class: "muted" }, `This link lasts until ${clock(link.expires_at)}.`),
    el("fieldset", { class: "cards" }, el("legend", {}, "Pay with"), cards),
    message, pay);
  root.replaceChildren(form);

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (pay.disabled) return;
    showError(message, null);
    const chosen = form.querySelector("input[name=payment_method]:checked");
    if (!chosen) {
      showError(message, new Error("Choose a card."));
      return;
    }
    pay.disabled = true;
    pay.textContent = "Paying…";
    try {
      const order = await api(path, { method: "POST", body: { payment_method: chosen.value } });
      placed(order);
      return;
    } catch (e) {
      if (e.status === 404 || e.status === 410) {
        closed(e);
        return;
      }
      showError(message, DECLINED[e.code] ? new Error(DECLINED[e.code]) : e);
    }
    pay.disabled = false;
    pay.textContent = `Pay ${money(link.total_cents)}`;
  });
}

async function start() {
  try {
    render(await api(path));
  } catch (e) {
    if (e.status === 404 || e.status === 410) closed(e);
    else root.replaceChildren(el("div", { class: "alert error", role: "alert" }, e.message));
  }
}

start();
