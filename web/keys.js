// API keys for a merchant's own systems (a POS, a kitchen screen): make one with the scopes it
// needs, limited to one kitchen, see it once to copy it; list keys with their last use; revoke.

import { api, clearSession, el, field, getSession, mountAuth, showError } from "/assets/common.js";

const ROLE = "merchant";
const root = document.getElementById("app");
const logout = document.getElementById("logout");

/** The scopes a merchant's key may hold, with what each lets it do. */
const SCOPES = [
  ["orders:read", "Read orders and watch the board"],
  ["orders:write", "Place orders; accept, reject and mark ready"],
  ["menu:write", "Replace the menu"],
  ["merchants:write", "Open and close the kitchen"],
  ["webhooks:manage", "Manage webhooks"],
  ["profile:read", "Read the account"],
  ["maps:read", "Geocode addresses"],
  ["keys:manage", "Make and revoke keys (within its own scopes)"],
];

function when(iso) {
  return iso ? new Date(iso).toLocaleString([], { dateStyle: "medium", timeStyle: "short" }) : "—";
}

function stateOf(key) {
  if (key.revoked_at) return "revoked";
  if (key.expires_at && new Date(key.expires_at) <= new Date()) return "expired";
  return "active";
}

async function start(session) {
  logout.classList.remove("hidden");
  logout.onclick = () => { clearSession(ROLE); location.reload(); };
  const token = session.token;
  const error = el("div", { class: "alert error hidden", role: "alert" });
  const shown = el("div", { class: "hidden", "data-testid": "new-key" });
  const list = el("div", { "data-testid": "keys" });
  let merchants = [];
  try {
    merchants = (await api("/api/v1/me/merchants", { token })).merchants;
  } catch (e) {
    showError(error, e);
  }

  const name = field("Name", { name: "name", required: true, maxlength: 100, placeholder: "POS" });
  const boxes = SCOPES.map(([scope, what]) => {
    const input = el("input", { type: "checkbox", value: scope, checked: scope.startsWith("orders:") });
    return { input, row: el("label", { class: "check" }, input, el("code", {}, scope), ` — ${what}`) };
  });
  const merchant = el("select", { id: "key-merchant" },
    el("option", { value: "" }, "All my kitchens"),
    merchants.map((m) => el("option", { value: m.id }, m.name)));
  const expires = field("Expires (optional)", { name: "expires", type: "date" });
  const mode = el("select", { id: "key-mode" }, el("option", { value: "live" }, "Live"), el("option", { value: "test" }, "Test (sandbox)"));
  const create = el("button", { type: "submit" }, "Create key");
  const form = el("form", { class: "card", "aria-label": "New API key" },
    el("h2", {}, "New API key"),
    name.label, name.input,
    el("fieldset", {}, el("legend", {}, "Scopes"), boxes.map((b) => b.row)),
    el("label", { for: "key-merchant" }, "Kitchen"), merchant,
    expires.label, expires.input,
    el("label", { for: "key-mode" }, "Mode"), mode,
    error,
    el("div", { class: "row" }, create));

  async function refresh() {
    const { api_keys: keys } = await api("/api/v1/api-keys", { token });
    const rows = keys.map((key) => {
      const state = stateOf(key);
      const revoke = state === "active"
        ? el("button", { type: "button", class: "secondary", "aria-label": `Revoke ${key.name}` }, "Revoke")
        : null;
      revoke?.addEventListener("click", async () => {
        if (!confirm(`Revoke “${key.name}” (${key.prefix}…)? Systems using it stop working within a second.`)) return;
        try {
          await api(`/api/v1/api-keys/${key.id}`, { method: "DELETE", token });
          await refresh();
        } catch (e) { showError(error, e); }
      });
      const kitchen = merchants.find((m) => m.id === key.merchant_id)?.name ?? (key.merchant_id ? "another kitchen" : "all");
      return el("tr", { "data-key": key.id, "data-state": state },
        el("td", {}, key.name), el("td", {}, el("code", {}, `${key.prefix}…`)), el("td", {}, key.mode),
        el("td", {}, key.scopes.join(" ")), el("td", {}, kitchen),
        el("td", {}, when(key.last_used_at)), el("td", {}, when(key.expires_at)), el("td", {}, state), el("td", {}, revoke));
    });
    list.replaceChildren(keys.length === 0
      ? el("p", { class: "muted" }, "No keys yet.")
      : el("table", {},
        el("thead", {}, el("tr", {}, ["Name", "Key", "Mode", "Scopes", "Kitchen", "Last used", "Expires", "State", ""].map((h) => el("th", {}, h)))),
        el("tbody", {}, rows)));
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    showError(error, null);
    const scopes = boxes.filter((b) => b.input.checked).map((b) => b.input.value);
    const body = { name: name.input.value, scopes, merchant_id: merchant.value || null, mode: mode.value };
    if (expires.input.value) body.expires_at = new Date(`${expires.input.value}T23:59:59`).toISOString();
    try {
      const made = await api("/api/v1/api-keys", { method: "POST", token, body });
      const copy = el("button", { type: "button", class: "secondary" }, "Copy");
      const secret = el("code", { "data-testid": "secret" }, made.key);
      copy.addEventListener("click", () => navigator.clipboard?.writeText(made.key));
      shown.replaceChildren(el("div", { class: "card" },
        el("h2", {}, `Key “${made.name}”`),
        el("p", {}, "Copy it now: it is shown this once. Send it as ", el("code", {}, "Authorization: Bearer …"), "."),
        el("p", {}, secret, " ", copy)));
      shown.classList.remove("hidden");
      form.reset();
      await refresh();
    } catch (e) {
      showError(error, e);
    }
  });

  root.replaceChildren(form, shown, el("section", { class: "card", "aria-label": "Your API keys" }, el("h2", {}, "Your API keys"), list));
  try { await refresh(); } catch (e) { showError(error, e); }
}

const session = getSession(ROLE);
if (session) start(session);
else mountAuth(root, ROLE, start, { allowSignup: false });
