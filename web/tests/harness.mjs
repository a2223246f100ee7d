// Test harness: the mealkitz binary on a fresh SQLite store, Debian's Chromium through
// playwright-core, REST helpers and screenshots.

import { spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
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

/** `mealkitz serve` on loopback, restartable on the same port and database. */
export class Server {
  constructor() {
    if (!BINARY) throw new Error("set MEALKITZ_BIN to the mealkitz binary");
    this.dir = mkdtempSync(path.join(tmpdir(), "mealkitz-browser-"));
    this.port = null;
    this.child = null;
  }

  get base() {
    return `http://127.0.0.1:${this.port}`;
  }

  async start() {
    this.port ??= await freePort();
    this.child = spawn(BINARY, ["serve", "--bind", `127.0.0.1:${this.port}`], {
      env: {
        ...process.env,
        DATABASE_URL: `sqlite://${path.join(this.dir, "mealkitz.db")}`,
        MEALKITZ_JWT_SECRET: SECRET,
        MEALKITZ_LOG_FORMAT: "json",
        RUST_LOG: process.env.TEST_LOG ? "info" : "warn",
        MEALKITZ_OFFER_TIMEOUT_SECS: "60",
        MEALKITZ_SEARCH_RETRY_MS: "500",
        MEALKITZ_LOGIN_FAILURES_PER_ADDRESS_PER_MINUTE: "10000",
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
  async kitchen(lat, lon, name = "Test Kitchen") {
    const owner = await this.user("merchant");
    const merchant = await this.api("/api/v1/merchants", { method: "POST", token: owner.token, body: { name, address: "1 Test St", location: { lat, lon } } });
    const menu = await this.api(`/api/v1/merchants/${merchant.id}/menu`, {
      method: "PUT", token: owner.token,
      body: { items: [{ name: "Ramen kit", price_cents: 1250 }, { name: "Gyoza (6)", price_cents: 599 }] },
    });
    return { owner, merchant, menu };
  }
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
