// Shared by every page: the API client, sessions, the login form, and a WebSocket that
// reconnects on its own.

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** Calls the REST API; resolves to the JSON body or throws an ApiError. */
export async function api(path, { method = "GET", body, token, headers = {} } = {}) {
  const init = { method, headers: { ...headers } };
  if (token) init.headers.authorization = `Bearer ${token}`;
  if (body !== undefined) {
    init.headers["content-type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch {
    throw new ApiError(0, "network", "The server cannot be reached. Check the connection.");
  }
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = null; }
  if (!response.ok) {
    const error = data && data.error ? data.error : { code: "http_" + response.status, message: response.statusText };
    throw new ApiError(response.status, error.code, error.message);
  }
  return data;
}

const SESSION_PREFIX = "mealkitz.session.";

export function getSession(role) {
  try {
    const session = JSON.parse(sessionStorage.getItem(SESSION_PREFIX + role));
    if (session && new Date(session.expires_at) > new Date()) return session;
  } catch { /* no session */ }
  return null;
}

export function setSession(role, session) {
  sessionStorage.setItem(SESSION_PREFIX + role, JSON.stringify(session));
}

export function clearSession(role) {
  sessionStorage.removeItem(SESSION_PREFIX + role);
}

/** Why the last sign-in through a link or a provider failed, shown by the next log-in form. */
let signInProblem = null;

/**
 * A sign-in token in the address's fragment — a tracking link from the WhatsApp bot, or the way
 * back from the OpenID provider (#token=…) — becomes a session; a failed provider sign-in comes
 * back as #oidc_error=…&message=… instead. Either way the fragment leaves the address bar (it is
 * never sent to a server, so never in a log). Resolves to the session ({ token, expires_at,
 * user }), or null.
 */
export async function sessionFromFragment() {
  const params = new URLSearchParams(location.hash.slice(1));
  const token = params.get("token");
  const failed = params.get("oidc_error");
  if (!token && !failed) return null;
  history.replaceState(null, "", location.pathname + location.search);
  if (!token) {
    signInProblem = params.get("message") || "The sign-in failed; try again.";
    return null;
  }
  try {
    const payload = JSON.parse(atob(token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/")));
    const user = await api("/api/v1/me", { token });
    return { token, expires_at: new Date(payload.exp * 1000).toISOString(), user };
  } catch {
    signInProblem = "That sign-in link has expired or is not valid; log in again.";
    return null;
  }
}

/**
 * The session of a page for `role`: one just handed over in the fragment (kept for the tab),
 * else the tab's own. An account of another role that comes back is not used, and the log-in
 * form says why.
 */
export async function pageSession(role) {
  const handed = await sessionFromFragment();
  if (handed) {
    if (handed.user.role === role || handed.user.role === "admin") {
      setSession(role, handed);
      return handed;
    }
    signInProblem = `You signed in as ${handed.user.email}, which is a ${handed.user.role} account, not a ${role} account.`;
  }
  return getSession(role);
}

/** The OpenID provider sign-in, when configured: { name, login_url }, else null. */
let providerInfo;
export function signInProvider() {
  providerInfo ??= api("/auth/oidc").then((info) => (info && info.enabled ? info : null)).catch(() => null);
  return providerInfo;
}

/** A "Sign in with …" button that comes back to this page, or null without a provider. */
export async function providerButton() {
  const provider = await signInProvider();
  if (!provider) return null;
  const back = location.pathname + location.search;
  const url = `${provider.login_url}?return_to=${encodeURIComponent(back)}`;
  return el("button", { type: "button", class: "secondary", onclick: () => location.assign(url) },
    `Sign in with ${provider.name}`);
}

/** Builds an element: el("button", { class: "x", onclick: f }, "text", child). */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") node.addEventListener(key.slice(2), value);
    else if (key === "class") node.className = value;
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export function money(cents) {
  const sign = cents < 0 ? "-" : "";
  const abs = Math.abs(cents);
  return `${sign}$${Math.floor(abs / 100)}.${String(abs % 100).padStart(2, "0")}`;
}

export function shortId(id) {
  return "#" + String(id).slice(-6).toUpperCase();
}

export function clock(iso) {
  return new Date(iso).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

/** Shows an error (or clears it with null) in an element with role="alert". */
export function showError(node, error) {
  node.replaceChildren();
  node.classList.toggle("hidden", !error);
  if (error) node.append(error.message || String(error));
}

let uniqueIds = 0;
function fieldId(name) {
  uniqueIds += 1;
  return `f-${name}-${uniqueIds}`;
}

/** A labelled input. */
export function field(label, attrs) {
  const id = fieldId(attrs.name || "x");
  return { label: el("label", { for: id }, label), input: el("input", { id, ...attrs }) };
}

/**
 * Renders a log-in / sign-up form for `role` into `root`; calls onSession(session) once in.
 */
export function mountAuth(root, role, onSession, { allowSignup = true } = {}) {
  const email = field("Email", { name: "email", type: "email", autocomplete: "username", required: true });
  const password = field("Password", { name: "password", type: "password", autocomplete: "current-password", required: true, minlength: 8 });
  const name = field("Your name (for a new account)", { name: "name", autocomplete: "name" });
  const error = el("div", { class: "alert error hidden", role: "alert" });
  const login = el("button", { type: "submit" }, "Log in");
  const signup = allowSignup ? el("button", { type: "button", class: "secondary" }, "Create account") : null;
  const form = el("form", { class: "card", "aria-label": `${role} log in` },
    el("h2", {}, `Log in as ${role}`),
    email.label, email.input, password.label, password.input,
    allowSignup ? [name.label, name.input] : null,
    error,
    el("div", { class: "row" }, login, signup));

  async function enter(create) {
    showError(error, null);
    try {
      if (create) {
        await api("/api/v1/users", { method: "POST", body: {
          email: email.input.value, password: password.input.value,
          name: name.input.value || email.input.value.split("@")[0], role,
        } });
      }
      const session = await api("/api/v1/sessions", { method: "POST", body: { email: email.input.value, password: password.input.value } });
      if (session.user.role !== role && session.user.role !== "admin") {
        throw new Error(`This account is a ${session.user.role}, not a ${role}.`);
      }
      setSession(role, session);
      onSession(session);
    } catch (e) {
      showError(error, e);
    }
  }
  form.addEventListener("submit", (event) => { event.preventDefault(); enter(false); });
  if (signup) signup.addEventListener("click", () => enter(true));
  root.replaceChildren(form);
  email.input.focus();
  if (signInProblem) {
    showError(error, new Error(signInProblem));
    signInProblem = null;
  }
  providerButton().then((button) => {
    if (button) form.append(el("p", { class: "muted" }, "Or, with an account you already have:"), button);
  });
}

/**
 * The landing page (/) has no script of its own: when it has an [data-account] box, it shows
 * there who is signed in in this tab, or the provider's "Sign in with …" button.
 */
async function mountAccountBox(box) {
  const handed = await sessionFromFragment();
  if (handed) setSession(handed.user.role, handed);
  const session = handed || ["customer", "merchant", "driver", "admin"].map(getSession).find(Boolean);
  const problem = signInProblem ? el("div", { class: "alert error", role: "alert" }, signInProblem) : null;
  signInProblem = null;
  if (session) {
    const { user } = session;
    const logout = el("button", { type: "button", class: "secondary" }, "Log out");
    logout.addEventListener("click", () => {
      for (const role of ["customer", "merchant", "driver", "admin"]) clearSession(role);
      location.reload();
    });
    box.replaceChildren(problem ?? "",
      el("p", { "data-testid": "signed-in" }, "Signed in as ", el("strong", {}, user.name), ` (${user.email}), a ${user.role}.`),
      el("div", { class: "row" }, logout));
    box.hidden = false;
    return;
  }
  const button = await providerButton();
  if (!button && !problem) return;
  box.replaceChildren(problem ?? "", button ?? "");
  box.hidden = false;
}

const accountBox = typeof document !== "undefined" && document.querySelector("[data-account]");
if (accountBox) mountAccountBox(accountBox);

/**
 * A WebSocket that reconnects with backoff (0.5 s doubling to 10 s, with jitter) until stopped.
 * handlers: onOpen(socket), onMessage(message), onStatus("live" | "reconnecting" | "closed", detail)
 */
export function liveSocket(path, token, handlers) {
  let socket = null;
  let stopped = false;
  let delay = 500;
  let timer = null;
  const url = () => {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const separator = path.includes("?") ? "&" : "?";
    return `${scheme}//${location.host}${path}${separator}token=${encodeURIComponent(token)}`;
  };
  function connect() {
    socket = new WebSocket(url());
    socket.addEventListener("open", () => {
      delay = 500;
      handlers.onStatus?.("live");
      handlers.onOpen?.(socket);
    });
    socket.addEventListener("message", (event) => {
      let message;
      try { message = JSON.parse(event.data); } catch { return; }
      handlers.onMessage?.(message);
    });
    socket.addEventListener("close", (event) => {
      socket = null;
      if (stopped) return;
      if (event.code === 1008) {
        handlers.onStatus?.("closed", "Your session expired. Log in again.");
        stopped = true;
        return;
      }
      handlers.onStatus?.("reconnecting");
      const wait = delay * (0.75 + Math.random() * 0.5);
      delay = Math.min(delay * 2, 10000);
      timer = setTimeout(connect, wait);
    });
  }
  connect();
  return {
    send(message) {
      if (socket && socket.readyState === WebSocket.OPEN) {
        socket.send(JSON.stringify(message));
        return true;
      }
      return false;
    },
    stop() {
      stopped = true;
      clearTimeout(timer);
      socket?.close(1000);
    },
  };
}

/** Renders the live/reconnecting badge. */
export function statusBadge(node, state, detail) {
  node.className = "pill " + (state === "live" ? "live" : "reconnecting");
  node.textContent = state === "live" ? "Live" : state === "reconnecting" ? "Reconnecting…" : (detail || "Disconnected");
}

/** Where the demo city is: its centre, for default locations. */
export const DEMO_CENTRE = { lat: 40.75, lon: -73.98 };
