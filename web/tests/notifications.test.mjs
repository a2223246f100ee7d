// What was sent, as people see it: the customer gives a phone and consent on the checkout page,
// the tracking page says the order was notified on WhatsApp, and the merchant's board warns of a
// webhook that keeps failing. The WhatsApp Graph API and the merchant's endpoint are small local
// stand-ins started here (the endpoint answers 500 to everything).

import assert from "node:assert/strict";
import { createServer } from "node:http";
import { after, before, test } from "node:test";

import { Server, freePort, launch, logIn, openPage, screenshot } from "./harness.mjs";

const KITCHEN = { lat: 40.7484, lon: -73.9857 };
const HOME = { lat: 40.7574, lon: -73.9857 }; // 1 km north

let server;
let browser;
let graph;
let endpoint;
const sent = [];
const deliveries = [];

/** A local HTTP server answering every request with `answer(request, body)`. */
async function standIn(answer) {
  const port = await freePort();
  const http = createServer((request, response) => {
    let body = "";
    request.on("data", (chunk) => { body += chunk; });
    request.on("end", () => {
      const [status, json] = answer(request, body);
      response.writeHead(status, { "content-type": "application/json" });
      response.end(JSON.stringify(json));
    });
  });
  await new Promise((resolve) => http.listen(port, "127.0.0.1", resolve));
  return { http, url: `http://127.0.0.1:${port}` };
}

before(async () => {
  graph = await standIn((request, body) => {
    sent.push({ path: request.url, body: JSON.parse(body) });
    return [200, { messaging_product: "whatsapp", contacts: [], messages: [{ id: `wamid.${sent.length}` }] }];
  });
  endpoint = await standIn((_request, body) => {
    deliveries.push(JSON.parse(body));
    return [500, { error: "down for maintenance" }];
  });
  server = new Server({
    env: {
      MEALKITZ_WHATSAPP_API_URL: graph.url,
      MEALKITZ_WHATSAPP_PHONE_NUMBER_ID: "1234567890",
      MEALKITZ_WHATSAPP_TOKEN: "EAAG-browser-test-token",
      MEALKITZ_WEBHOOK_ALLOW_PRIVATE: "true",
    },
  });
  await server.start();
  browser = await launch();
});

after(async () => {
  await browser?.close();
  await server?.destroy();
  graph?.http.close();
  endpoint?.http.close();
});

test("the checkout takes a phone and consent, tracking shows what was sent on WhatsApp, the board warns of a failing webhook", async () => {
  const { owner, merchant } = await server.kitchen(KITCHEN.lat, KITCHEN.lon);
  await server.api(`/api/v1/merchants/${merchant.id}/webhooks`, {
    method: "POST", token: owner.token,
    body: { url: `${endpoint.url}/hooks`, events: ["order.placed", "order.accepted"] },
  });
  const customer = await server.user("customer");

  const shop = await openPage(browser, `${server.base}/order`);
  await logIn(shop, customer);
  await shop.getByLabel("Latitude").fill(String(HOME.lat));
  await shop.getByLabel("Longitude").fill(String(HOME.lon));
  await shop.getByRole("button", { name: "Find kitchens nearby" }).click();
  await shop.getByRole("button", { name: "Order from Test Kitchen" }).click();
  await shop.getByLabel(/Ramen kit/).fill("1");
  await shop.getByLabel("Phone for order updates (optional)").fill("+358 40 123 4567");
  await shop.getByLabel("Send me order updates on WhatsApp").check();
  await shop.getByLabel("Pay with").selectOption("pm_card_visa");
  await shop.getByRole("button", { name: "Pay and order" }).click();
  await shop.waitForURL(/\/track\//);
  const orderId = shop.url().split("/track/")[1];

  // The board accepts (there is no REST route for it: the board's socket does it).
  const board = await openPage(browser, `${server.base}/merchant`);
  await logIn(board, owner);
  const card = board.locator(`article[data-order="${orderId}"]`);
  await card.getByRole("button", { name: "Accept" }).click();
  await board.locator('[data-column="accepted"] article').waitFor();

  const notified = shop.getByTestId("notified");
  await notified.filter({ hasText: "Notified on WhatsApp" }).waitFor({ timeout: 20000 });
  assert.match(await notified.textContent(), /accepted/);
  await screenshot(shop, "track-notified");
  assert.equal(sent.length, 1, "one message: the acceptance");
  assert.equal(sent[0].body.to, "358401234567");
  assert.equal(sent[0].body.type, "template", "outside the 24-hour window");

  // The endpoint failed on the order's first event; a board opened now says so.
  await board.close();
  const later = await openPage(browser, `${server.base}/merchant`);
  await logIn(later, owner);
  const notice = later.getByTestId("webhook-notice");
  await notice.filter({ hasText: "failing since" }).waitFor({ timeout: 20000 });
  assert.match(await notice.textContent(), /hooks/);
  assert.ok(deliveries.length >= 1, "the endpoint was called");
  await screenshot(later, "board-webhook-failing");
});
