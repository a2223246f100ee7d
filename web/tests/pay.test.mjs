// Ordering over WhatsApp and paying on the web: signed webhook deliveries play the customer's
// side of the chat ("hi", a location, a kitchen, an item, a quantity, Checkout), a local stand-in
// for the WhatsApp Graph API records what the bot sends, and the payment link it sends is paid in
// Chromium — first with a card that is declined, then with Visa — after which the chat says the
// order was placed.

import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import { createServer } from "node:http";
import { after, before, test } from "node:test";

import { Server, freePort, launch, openPage, screenshot, sleep } from "./harness.mjs";

const KITCHEN = { lat: 40.7484, lon: -73.9857 };
const HOME = { lat: 40.7574, lon: -73.9857 }; // 1 km north
const APP_SECRET = "browser-test-whatsapp-app-secret";
const PHONE_NUMBER_ID = "1234567890";
const CUSTOMER = "358401234567";
/** How long the bot may take to answer one message. */
const ANSWER_WITHIN_MS = 20000;

let server;
let browser;
let graph;
/** Every message the bot sent: { path, body }. */
const sent = [];
let wamids = 0;

/** The Graph API stand-in: records every message and answers as Meta does. */
async function graphStandIn() {
  const port = await freePort();
  const http = createServer((request, response) => {
    let body = "";
    request.on("data", (chunk) => { body += chunk; });
    request.on("end", () => {
      let parsed = null;
      try { parsed = JSON.parse(body); } catch { /* not JSON */ }
      sent.push({ path: request.url, body: parsed });
      response.writeHead(200, { "content-type": "application/json" });
      response.end(JSON.stringify({
        messaging_product: "whatsapp",
        contacts: [{ input: CUSTOMER, wa_id: CUSTOMER }],
        messages: [{ id: `wamid.out.${sent.length}` }],
      }));
    });
  });
  await new Promise((resolve) => http.listen(port, "127.0.0.1", resolve));
  return { http, url: `http://127.0.0.1:${port}` };
}

/** Delivers one customer message to the webhook as Meta does: enveloped and signed. */
async function deliver(message) {
  wamids += 1;
  const envelope = {
    object: "whatsapp_business_account",
    entry: [{
      id: "WABA",
      changes: [{
        field: "messages",
        value: {
          messaging_product: "whatsapp",
          metadata: { display_phone_number: "15550001111", phone_number_id: PHONE_NUMBER_ID },
          contacts: [{ profile: { name: "Aino" }, wa_id: CUSTOMER }],
          messages: [{
            from: CUSTOMER,
            id: `wamid.in.${wamids}.${Date.now()}`,
            timestamp: String(Math.floor(Date.now() / 1000)),
            ...message,
          }],
        },
      }],
    }],
  };
  const raw = JSON.stringify(envelope);
  const signature = createHmac("sha256", APP_SECRET).update(raw).digest("hex");
  const response = await fetch(`${server.base}/webhooks/whatsapp`, {
    method: "POST",
    headers: { "content-type": "application/json", "x-hub-signature-256": `sha256=${signature}` },
    body: raw,
  });
  assert.equal(response.status, 200, `webhook delivery: ${await response.text()}`);
}

const text = (body) => ({ type: "text", text: { body } });
const listReply = (id) => ({ type: "interactive", interactive: { type: "list_reply", list_reply: { id, title: id } } });
const buttonReply = (id) => ({ type: "interactive", interactive: { type: "button_reply", button_reply: { id, title: id } } });

/** Waits for a message from the bot to the customer, sent after the `from`th, that `matches`. */
async function botSays(from, matches, what) {
  const deadline = Date.now() + ANSWER_WITHIN_MS;
  while (Date.now() < deadline) {
    const found = sent.slice(from).find((m) => m.body?.to === CUSTOMER && matches(m.body));
    if (found) return found.body;
    await sleep(100);
  }
  throw new Error(`the bot never sent ${what}; it sent: ${JSON.stringify(sent.slice(from).map((m) => m.body))}`);
}

/** Whether a message mentions `needle` anywhere (a button or row id, a text). */
const mentions = (needle) => (body) => JSON.stringify(body).includes(needle);

before(async () => {
  graph = await graphStandIn();
  server = new Server({
    env: {
      MEALKITZ_WHATSAPP_API_URL: graph.url,
      MEALKITZ_WHATSAPP_PHONE_NUMBER_ID: PHONE_NUMBER_ID,
      MEALKITZ_WHATSAPP_TOKEN: "EAAG-browser-test-token",
      MEALKITZ_WHATSAPP_APP_SECRET: APP_SECRET,
      MEALKITZ_WHATSAPP_VERIFY_TOKEN: "browser-test-verify-token",
    },
  });
  // The links the bot sends point at this server.
  server.port = await freePort();
  server.env.MEALKITZ_PUBLIC_URL = server.base;
  await server.start();
  browser = await launch();
});

after(async () => {
  await browser?.close();
  await server?.destroy();
  graph?.http.close();
});

test("a basket chosen in the WhatsApp chat is paid on the pay page, after a declined card, and the chat says the order was placed", async () => {
  const { merchant, menu } = await server.kitchen(KITCHEN.lat, KITCHEN.lon);
  const ramen = menu.items.find((item) => item.name === "Ramen kit");

  let mark = sent.length;
  await deliver(text("hi"));
  await botSays(mark, () => true, "a greeting");

  mark = sent.length;
  await deliver({ type: "location", location: { latitude: HOME.lat, longitude: HOME.lon } });
  await botSays(mark, mentions(`kitchen:${merchant.id}`), "the kitchens nearby");

  mark = sent.length;
  await deliver(listReply(`kitchen:${merchant.id}`));
  await botSays(mark, mentions(`dish:${ramen.id}`), "the kitchen's menu");

  mark = sent.length;
  await deliver(listReply(`dish:${ramen.id}`));
  await botSays(mark, mentions("qty:2"), "a choice of quantity");

  mark = sent.length;
  await deliver(buttonReply("qty:2"));
  await botSays(mark, mentions("basket:checkout"), "the basket with Checkout");

  mark = sent.length;
  await deliver(buttonReply("basket:checkout"));
  const linkMessage = await botSays(mark, (body) => body.type === "text" && /\/pay\/[A-Za-z0-9_-]+/.test(body.text?.body || ""), "a payment link");
  const token = /\/pay\/([A-Za-z0-9_-]+)/.exec(linkMessage.text.body)[1];
  assert.ok(token.length >= 43, `a random token: ${token}`);
  assert.ok(!linkMessage.text.body.includes(ramen.id), "the link carries no order data");

  const page = await openPage(browser, `${server.base}/pay/${token}`, { phone: true });
  const form = page.getByRole("form", { name: "Pay your order" });
  await form.waitFor();
  assert.match(await form.textContent(), /2 × Ramen kit/);
  assert.match(await form.textContent(), /Test Kitchen/);
  // 2 × $12.50, and $1.99 + $0.60 for the kilometre: as checkout prices it.
  assert.equal(await page.getByTestId("pay-total").textContent(), "$27.59");
  await screenshot(page, "pay-basket");

  await page.getByLabel("Declined card (test)").check();
  const pay = page.getByRole("button", { name: /^Pay / });
  await pay.click();
  const error = page.getByTestId("pay-error");
  await error.filter({ hasText: "declined" }).waitFor();
  assert.match(await error.textContent(), /Choose another card/);
  assert.equal(await pay.isEnabled(), true, "another card may be tried");
  await screenshot(page, "pay-declined");

  await page.getByLabel("Visa (test card that pays)").check();
  await pay.click();
  const done = page.getByTestId("pay-done");
  await done.waitFor();
  const heading = await done.getByRole("heading").textContent();
  assert.match(heading, /^Order #[0-9A-F]{6} placed$/);
  assert.match(await done.textContent(), /We'll keep you posted on WhatsApp\./);
  await screenshot(page, "pay-placed");
  const code = /#([0-9A-F]{6})/.exec(heading)[1];

  // The chat hears of it.
  const placed = await botSays(mark, (body) => body.type === "text" && /Order #/.test(body.text?.body || "") && /placed/.test(body.text.body), "Order #… placed");
  assert.match(placed.text.body, new RegExp(`#${code}`));

  // The link is spent: opened again, it says so and offers no form.
  await page.reload();
  await page.getByTestId("pay-closed").waitFor();
  assert.equal(await page.getByRole("button", { name: /^Pay / }).count(), 0);

  // Only the declined card's answer (402) reached the console, as the browser reports it.
  const unexpected = page.problems.filter((p) => !/status of (402|410)/.test(p));
  assert.deepEqual(unexpected, [], "no script errors");

  // The chat's tracking link opens the order signed in (a customer who never set a password),
  // and the sign-in token leaves the address bar.
  const trackUrl = /(https?:\/\/\S+\/track\/\S+)/.exec(placed.text.body)[1];
  assert.match(trackUrl, /#token=/, "the link signs the customer in");
  const tracking = await openPage(browser, trackUrl);
  await tracking.getByTestId("dispatch").waitFor();
  assert.match(await tracking.locator("h2").first().textContent(), /^Order /);
  assert.ok(!tracking.url().includes("token="), `the token is gone from the address: ${tracking.url()}`);
  await screenshot(tracking, "pay-tracking");
});
