// Sign-in with an OpenID provider, against a real one: `oidc-provider` from npm (OpenID
// Certified), started by web/tests/oidc-provider.mjs with its development login and consent
// pages. Chromium clicks "Sign in with Test ID" on mealkitz's pages, fills the provider's
// login form, consents, and comes back signed in: a new person becomes a customer, the same
// person signing in again gets the same account, an existing password account with the same
// verified email is linked (not duplicated), and an unverified email that matches an existing
// account is refused with a readable message.

import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import path from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";

import { Server, freePort, launch, openPage, screenshot } from "./harness.mjs";

const PROVIDER_SCRIPT = path.join(path.dirname(fileURLToPath(import.meta.url)), "oidc-provider.mjs");
const CLIENT_ID = "mealkitz-browser-test";
const CLIENT_SECRET = randomBytes(24).toString("hex");
const PROVIDER_NAME = "Test ID";

let server;
let browser;
let provider;

/** Runs the provider script; resolves to { issuer, stop() } once it serves. */
async function startProvider(redirectUri) {
  const port = await freePort();
  const child = spawn(process.execPath, [PROVIDER_SCRIPT, "--port", String(port), "--client-id", CLIENT_ID,
    "--client-secret", CLIENT_SECRET, "--redirect-uri", redirectUri], {
    stdio: ["ignore", "pipe", process.env.TEST_LOG ? "inherit" : "ignore"],
  });
  const issuer = await new Promise((resolve, reject) => {
    let out = "";
    const timer = setTimeout(() => reject(new Error(`oidc-provider did not start: ${out}`)), 20000);
    child.stdout.on("data", (chunk) => {
      out += chunk;
      const ready = /^ready (\S+)$/m.exec(out);
      if (ready) { clearTimeout(timer); resolve(ready[1]); }
    });
    child.once("exit", (code) => { clearTimeout(timer); reject(new Error(`oidc-provider exited (${code}): ${out}`)); });
  });
  child.stdout.resume();
  return {
    issuer,
    async stop() {
      if (child.exitCode !== null) return;
      const exited = new Promise((resolve) => child.once("exit", resolve));
      child.kill("SIGTERM");
      await exited;
    },
  };
}

before(async () => {
  // The provider must know mealkitz's redirect URI before either starts: fix mealkitz's port first.
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  provider = await startProvider(`${base}/auth/oidc/callback`);
  server = new Server({
    env: {
      MEALKITZ_PUBLIC_URL: base,
      MEALKITZ_OIDC_ISSUER: provider.issuer,
      MEALKITZ_OIDC_CLIENT_ID: CLIENT_ID,
      MEALKITZ_OIDC_CLIENT_SECRET: CLIENT_SECRET,
      MEALKITZ_OIDC_NAME: PROVIDER_NAME,
    },
  });
  server.port = port;
  await server.start();
  browser = await launch();
});

after(async () => {
  await browser?.close();
  await server?.destroy();
  await provider?.stop();
});

/** A login at the provider nobody used yet (the provider's account is named by it). */
function newLogin(prefix = "oidc") {
  return `${prefix}-${randomBytes(4).toString("hex")}@example.com`;
}

/**
 * On `page` (at a mealkitz page showing the button): clicks "Sign in with Test ID", signs in at
 * the provider as `login`, consents, and waits to be back on mealkitz.
 */
async function signInAtProvider(page, login) {
  await page.getByRole("button", { name: `Sign in with ${PROVIDER_NAME}` }).click();
  await page.waitForURL((url) => url.href.startsWith(provider.issuer));
  await page.locator("input[name=login]").fill(login);
  await page.locator("input[name=password]").fill("any password: the development provider takes any");
  await page.getByRole("button", { name: "Sign-in" }).click();
  // The consent page, unless this browser context granted it before.
  const consent = page.getByRole("button", { name: "Continue" });
  await Promise.race([
    consent.waitFor().then(() => consent.click()),
    page.waitForURL((url) => url.href.startsWith(server.base)),
  ]);
  await page.waitForURL((url) => url.href.startsWith(server.base));
}

/**
 * Errors on mealkitz's own pages (the provider's development pages fetch fonts from the
 * internet, which fails offline: not ours to judge).
 */
function watchOurPages(page) {
  const ours = [];
  page.on("pageerror", (error) => { if (page.url().startsWith(server.base)) ours.push(String(error)); });
  page.on("console", (message) => {
    if (message.type() === "error" && (message.location().url || page.url()).startsWith(server.base)) ours.push(message.text());
  });
  return ours;
}

/** The session this tab keeps for `role`. */
async function tabSession(page, role) {
  const stored = await page.evaluate((key) => sessionStorage.getItem(key), `mealkitz.session.${role}`);
  assert.ok(stored, `no ${role} session in the tab`);
  return JSON.parse(stored);
}

test("the provider is announced by name, and a new person signing in on / becomes a customer", async () => {
  const info = await server.api("/auth/oidc");
  assert.deepEqual(info, { enabled: true, name: PROVIDER_NAME, login_url: "/auth/oidc/login" });

  const login = newLogin("newcomer");
  const page = await openPage(browser, `${server.base}/`);
  const problems = watchOurPages(page);
  await signInAtProvider(page, login);

  const signedIn = page.getByTestId("signed-in");
  await signedIn.waitFor();
  const text = await signedIn.textContent();
  assert.match(text, new RegExp(login.replace(/[.]/g, "\\.")));
  assert.match(text, /a customer/);
  assert.equal(new URL(page.url()).hash, "", "the token left the address bar");
  assert.equal(new URL(page.url()).pathname, "/");
  await screenshot(page, "oidc-signed-in-landing");

  const session = await tabSession(page, "customer");
  const me = await server.api("/api/v1/me", { token: session.token });
  assert.equal(me.email, login);
  assert.equal(me.role, "customer");
  assert.equal(me.name, `OIDC ${login.split("@")[0]}`);
  // The account has no password anyone could guess: a password login fails.
  const response = await fetch(`${server.base}/api/v1/sessions`, {
    method: "POST", headers: { "content-type": "application/json" },
    body: JSON.stringify({ email: login, password: "!oidc-no-password" }),
  });
  assert.equal(response.status, 401);
  assert.deepEqual(problems, []);

  // The same person again, in a fresh browser (no provider session): the same account.
  const again = await openPage(browser, `${server.base}/`);
  await signInAtProvider(again, login);
  await again.getByTestId("signed-in").waitFor();
  const second = await tabSession(again, "customer");
  assert.notEqual(second.token, session.token);
  const meAgain = await server.api("/api/v1/me", { token: second.token });
  assert.equal(meAgain.id, me.id, "a second sign-in is the same account");
  await page.context().close();
  await again.context().close();
});

test("an existing password account with the same verified email is linked on the merchant board", async () => {
  const { owner, merchant } = await server.kitchen(40.7484, -73.9857, "Linked Kitchen");
  const page = await openPage(browser, `${server.base}/merchant`);
  await signInAtProvider(page, owner.email);
  // Back on the board, signed in as the merchant who owns the kitchen.
  await page.getByText("Linked Kitchen").first().waitFor();
  assert.equal(new URL(page.url()).pathname, "/merchant");
  assert.equal(new URL(page.url()).hash, "");
  await screenshot(page, "oidc-merchant-board");
  const session = await tabSession(page, "merchant");
  const me = await server.api("/api/v1/me", { token: session.token });
  assert.equal(me.id, owner.id, "linked to the existing account, not a new one");
  const mine = await server.api("/api/v1/me/merchants", { token: session.token });
  assert.deepEqual(mine.merchants.map((m) => m.id), [merchant.id]);
  // The password still works too.
  const withPassword = await server.api("/api/v1/sessions", { method: "POST", body: { email: owner.email, password: owner.password } });
  assert.equal(withPassword.user.id, owner.id);
  await page.context().close();
});

test("an unverified email matching an existing account is refused, with a readable message", async () => {
  const email = newLogin("unverified");
  const victim = await server.api("/api/v1/users", {
    method: "POST", body: { email, password: "correct horse battery", name: "Victim", role: "customer" },
  });
  const page = await openPage(browser, `${server.base}/order`);
  await signInAtProvider(page, email);
  const alert = page.getByRole("alert").filter({ hasText: "already exists" });
  await alert.waitFor();
  assert.match(await alert.textContent(), /does not confirm that the email is yours/);
  assert.equal(new URL(page.url()).pathname, "/order");
  assert.equal(new URL(page.url()).hash, "", "the error left the address bar");
  // Still the log-in form, and no session in the tab.
  await page.getByRole("button", { name: "Log in" }).waitFor();
  const stored = await page.evaluate(() => sessionStorage.getItem("mealkitz.session.customer"));
  assert.equal(stored, null);
  // The victim's account is untouched: still theirs by password.
  const session = await server.api("/api/v1/sessions", { method: "POST", body: { email, password: "correct horse battery" } });
  assert.equal(session.user.id, victim.id);
  await screenshot(page, "oidc-unverified-refused");
  await page.context().close();
});

test("cancelling at the provider comes back to the page with a message", async () => {
  const page = await openPage(browser, `${server.base}/merchant`);
  await page.getByRole("button", { name: `Sign in with ${PROVIDER_NAME}` }).click();
  await page.waitForURL((url) => url.href.startsWith(provider.issuer));
  await page.getByRole("link", { name: "[ Cancel ]" }).click();
  await page.waitForURL((url) => url.href.startsWith(server.base));
  const alert = page.getByRole("alert").filter({ hasText: "cancelled" });
  await alert.waitFor();
  assert.equal(new URL(page.url()).pathname, "/merchant");
  await page.context().close();
});
