// Test harness: the mealkitz binary on a fresh SQLite store, Debian's Chromium through
// playwright-core, osrm-routed when one is prepared, REST helpers and screenshots.

import { spawn } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, statSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { chromium } from "playwright-core";

export const BINARY = process.env.MEALKITZ_BIN;
export const SCREENSHOTS = process.env.SCREENSHOT_DIR || path.resolve("../../target/screenshots");
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const SECRET = "browser-test-secret-0123456789abcdefgh";

/** A port nothing listens on now. */
export async function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
    server.on("error", reject);
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * `mealkitz serve` on loopback, restartable on the same port and database. `args` are added to
 * the command line (e.g. --map-data), `env` to its environment.
 */
export class Server {
  constructor({ args = [], env = {} } = {}) {
    if (!BINARY) throw new Error("set MEALKITZ_BIN to the mealkitz binary");
    this.dir = mkdtempSync(path.join(tmpdir(), "mealkitz-browser-"));
    this.port = null;
    this.child = null;
    this.args = args;
    this.env = env;
  }

  get base() {
    return `http://127.0.0.1:${this.port}`;
  }

  async start() {
    this.port ??= await freePort();
    this.child = spawn(BINARY, ["serve", "--bind", `127.0.0.1:${this.port}`, ...this.args], {
      env: {
        ...process.env,
        DATABASE_URL: `sqlite://${path.join(this.dir, "mealkitz.db")}`,
        MEALKITZ_JWT_SECRET: SECRET,
        MEALKITZ_LOG_FORMAT: "json",
        RUST_LOG: process.env.TEST_LOG ? "info" : "warn",
        MEALKITZ_OFFER_TIMEOUT_SECS: "60",
        MEALKITZ_SEARCH_RETRY_MS: "500",
        MEALKITZ_LOGIN_FAILURES_PER_ADDRESS_PER_MINUTE: "10000",
        ...this.env,
      },
      stdio: ["ignore", "ignore", process.env.TEST_LOG ? "inherit" : "ignore"],
    });
    const deadline = Date.now() + 30000;
    while (Date.now() < deadline) {
      try {
        const response = await fetch(`${this.base}/ready`);
        if (response.status === 200) return;
      } catch { /* not up yet */ }
      await sleep(100);
    }
    throw new Error("mealkitz did not become ready");
  }

  async stop() {
    if (!this.child) return;
    const exited = new Promise((resolve) => this.child.once("exit", resolve));
    this.child.kill("SIGTERM");
    await exited;
    this.child = null;
  }

  async destroy() {
    await this.stop();
    rmSync(this.dir, { recursive: true, force: true });
  }

  /** Calls the REST API as `token`. */
  async api(pathname, { method = "GET", token, body, headers = {} } = {}) {
    const response = await fetch(this.base + pathname, {
      method,
      headers: { ...(body ? { "content-type": "application/json" } : {}), ...(token ? { authorization: `Bearer ${token}` } : {}), ...headers },
      body: body ? JSON.stringify(body) : undefined,
    });
    const data = await response.json().catch(() => null);
    if (!response.ok) throw new Error(`${method} ${pathname}: ${response.status} ${JSON.stringify(data)}`);
    return data;
  }

  /** Registers a user and returns {email, password, token, id}. */
  async user(role) {
    const email = `${role}-${Math.random().toString(36).slice(2)}@example.com`;
    const password = "correct horse battery";
    const user = await this.api("/api/v1/users", { method: "POST", body: { email, password, name: `Test ${role}`, role } });
    const session = await this.api("/api/v1/sessions", { method: "POST", body: { email, password } });
    return { email, password, token: session.token, id: user.id };
  }

  /** A merchant with a menu at (lat, lon). */
  async kitchen(lat, lon, name = "Test Kitchen", address = "1 Test St") {
    const owner = await this.user("merchant");
    const merchant = await this.api("/api/v1/merchants", { method: "POST", token: owner.token, body: { name, address, location: { lat, lon } } });
    const menu = await this.api(`/api/v1/merchants/${merchant.id}/menu`, {
      method: "PUT", token: owner.token,
      body: { items: [{ name: "Ramen kit", price_cents: 1250 }, { name: "Gyoza (6)", price_cents: 599 }] },
    });
    return { owner, merchant, menu };
  }
}

/** The files under `dir` (to `depth` levels), for finding things in an install of unknown layout. */
function filesUnder(dir, depth) {
  const found = [];
  let entries;
  try { entries = readdirSync(dir, { withFileTypes: true }); } catch { return found; }
  for (const entry of entries) {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory() && depth > 0) found.push(...filesUnder(full, depth - 1));
    else if (entry.isFile() || entry.isSymbolicLink()) found.push(full);
  }
  return found;
}

/**
 * osrm-routed on the Helsinki data, when MEALKITZ_TEST_OSRM_HOME (else MEALKITZ_OSRM_HOME, as
 * scripts/osrm.sh names it) holds OSRM prepared by scripts/osrm.sh: its binary somewhere under
 * it (bin/osrm-routed) and a contracted (.hsgr, CH) or partitioned (.mldgr, MLD) Helsinki.osrm
 * (data/Helsinki/). Resolves to { url, stop() }, or to { url: null, reason } when there is none,
 * so that tests run by straight line.
 */
export async function startOsrm() {
  const home = process.env.MEALKITZ_TEST_OSRM_HOME || process.env.MEALKITZ_OSRM_HOME;
  if (!home || !existsSync(home)) return { url: null, reason: "MEALKITZ_TEST_OSRM_HOME is not set or missing" };
  const files = filesUnder(home, 6);
  const binary = files.find((f) => path.basename(f) === "osrm-routed" && statSync(f).mode & 0o111);
  const graphs = files
    .map((f) => /^(.*\.osrm)\.(hsgr|mldgr)$/.exec(f))
    .filter(Boolean)
    .sort((a, b) => Number(/helsinki/i.test(b[1])) - Number(/helsinki/i.test(a[1])));
  if (!binary || graphs.length === 0) return { url: null, reason: `no osrm-routed or prepared .osrm under ${home}` };
  const [, base, kind] = graphs[0];
  const port = await freePort();
  const child = spawn(binary, ["--algorithm", kind === "hsgr" ? "ch" : "mld", "--ip", "127.0.0.1", "--port", String(port), base], {
    stdio: ["ignore", "ignore", process.env.TEST_LOG ? "inherit" : "ignore"],
  });
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 20000;
  while (Date.now() < deadline && child.exitCode === null) {
    try {
      const response = await fetch(`${url}/nearest/v1/driving/24.9384,60.1699`);
      if (response.ok) {
        return {
          url,
          async stop() {
            if (child.exitCode !== null) return;
            const exited = new Promise((resolve) => child.once("exit", resolve));
            child.kill("SIGTERM");
            await exited;
          },
        };
      }
    } catch { /* not up yet */ }
    await sleep(100);
  }
  child.kill("SIGKILL");
  throw new Error(`osrm-routed (${binary} on ${base}) did not answer`);
}

export async function launch() {
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-quic", "--no-first-run"],
  });
}

/** A page in its own context (its own session storage): a phone for drivers and trackers. */
export async function openPage(browser, url, { phone = false } = {}) {
  const context = await browser.newContext(phone ? { viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true } : { viewport: { width: 1400, height: 900 } });
  const page = await context.newPage();
  page.setDefaultTimeout(20000);
  const problems = [];
  page.on("pageerror", (error) => problems.push(String(error)));
  page.on("console", (message) => { if (message.type() === "error") problems.push(message.text()); });
  page.problems = problems;
  await page.goto(url);
  return page;
}

export async function logIn(page, user) {
  await page.getByLabel("Email").fill(user.email);
  await page.getByLabel("Password", { exact: true }).fill(user.password);
  await page.getByRole("button", { name: "Log in" }).click();
}

export async function screenshot(page, name) {
  mkdirSync(SCREENSHOTS, { recursive: true });
  await page.screenshot({ path: path.join(SCREENSHOTS, `${name}.png`), fullPage: true });
}

export { sleep };
