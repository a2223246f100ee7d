// The whole story in three pages at once, and the failure paths users meet first.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { Server, launch, logIn, openPage, screenshot, sleep } from "./harness.mjs";

const KITCHEN = { lat: 40.7484, lon: -73.9857 };
const HOME = { lat: 40.7574, lon: -73.9857 }; // 1 km north

let server;
let browser;

before(async () => {
  server = new Server();
  await server.start();
  browser = await launch();
});

after(async () => {
  await browser?.close();
  await server?.destroy();
});

async function driverMarker(page) {
  return page.locator("g.marker.driver").evaluate((g) => g.style.transform);
}

test("a customer orders, the board accepts, the driver delivers, tracking shows it all", async () => {
  const { owner } = await server.kitchen(KITCHEN.lat, KITCHEN.lon);
  const customer = await server.user("customer");
  const driver = await server.user("driver");

  const board = await openPage(browser, `${server.base}/merchant`);
  await logIn(board, owner);
  await board.getByRole("status").filter({ hasText: "Live" }).waitFor();

  const app = await openPage(browser, `${server.base}/driver`, { phone: true });
  await logIn(app, driver);
  await app.getByLabel("Start latitude").fill(String(KITCHEN.lat - 0.003));
  await app.getByLabel("Start longitude").fill(String(KITCHEN.lon));
  await app.getByLabel("Speed (km/h)").fill("400");
  await app.getByRole("button", { name: "Go online" }).click();
  await app.getByRole("status").filter({ hasText: "Live" }).waitFor();
  await screenshot(app, "driver-online");

  const shop = await openPage(browser, `${server.base}/order`);
  await logIn(shop, customer);
  await shop.getByLabel("Latitude").fill(String(HOME.lat));
  await shop.getByLabel("Longitude").fill(String(HOME.lon));
  await shop.getByRole("button", { name: "Find kitchens nearby" }).click();
  await shop.getByRole("button", { name: "Order from Test Kitchen" }).click();
  await shop.getByLabel(/Ramen kit/).fill("2");
  await shop.getByLabel("Pay with").selectOption("pm_card_visa");
  await screenshot(shop, "order-basket");
  await shop.getByRole("button", { name: "Pay and order" }).click();
  await shop.waitForURL(/\/track\//);
  const orderId = shop.url().split("/track/")[1];
  await shop.locator('li.done[data-step="placed"]').waitFor();
  await screenshot(shop, "track-placed");

  // The board shows the new order without a reload, highlighted.
  const card = board.locator(`article[data-order="${orderId}"]`);
  await card.waitFor();
  assert.equal(await card.getAttribute("data-status"), "placed");
  assert.match(await card.getAttribute("class"), /fresh/);
  await screenshot(board, "board-new-order");
  await card.getByLabel("Prep (min)").fill("12");
  await card.getByRole("button", { name: "Accept" }).click();
  await board.locator('[data-column="accepted"] article').waitFor();

  // The driver gets the offer with a countdown and takes it.
  const offer = app.getByRole("region", { name: "New delivery offer" });
  await offer.waitFor();
  const first = await app.getByTestId("countdown").textContent();
  assert.match(first, /^\d+ s$/);
  await sleep(1200);
  const later = await app.getByTestId("countdown").textContent();
  assert.ok(parseInt(later, 10) < parseInt(first, 10), `the countdown runs: ${first} then ${later}`);
  await screenshot(app, "driver-offer-countdown");
  await offer.getByRole("button", { name: "Accept" }).click();
  await app.getByRole("region", { name: "Your delivery" }).waitFor();

  // Tracking: a driver is assigned and its dot moves towards the kitchen.
  await shop.getByTestId("dispatch").filter({ hasText: "Driver assigned" }).waitFor();
  await shop.locator("g.marker.driver").waitFor();
  const before = await driverMarker(shop);
  await sleep(2500);
  const moved = await driverMarker(shop);
  assert.notEqual(moved, before, "the driver's dot moved");
  await shop.getByTestId("eta").filter({ hasText: /Arriving in about \d+ min/ }).waitFor();
  await screenshot(shop, "track-driver-moving");

  await board.locator(`article[data-order="${orderId}"]`).getByRole("button", { name: "Mark ready" }).click();
  await shop.locator('li.done[data-step="ready"]').waitFor();

  await app.getByText("At the kitchen.").waitFor();
  await app.getByRole("button", { name: "Picked up" }).click();
  await shop.locator('li.done[data-step="picked_up"]').waitFor();
  await board.locator(`[data-column="out"] article[data-order="${orderId}"]`).waitFor();
  await app.getByText("At the door.").waitFor({ timeout: 30000 });
  await screenshot(app, "driver-at-door");
  await app.getByRole("button", { name: "Delivered" }).click();

  await shop.locator('li.done[data-step="delivered"]').waitFor();
  await shop.getByText("Enjoy your meal!").waitFor();
  await board.locator(`[data-column="done"] article[data-order="${orderId}"]`).waitFor();
  await screenshot(shop, "track-delivered");
  await screenshot(board, "board-done");

  const order = await server.api(`/api/v1/orders/${orderId}`, { token: customer.token });
  assert.equal(order.status, "delivered");
  assert.equal(order.driver_id, driver.id);
  for (const page of [board, app, shop]) assert.deepEqual(page.problems, [], "no script errors");
});

test("a declined card is shown as a clear message and no order is made", async () => {
  await server.kitchen(KITCHEN.lat, KITCHEN.lon, "Declined Kitchen");
  const customer = await server.user("customer");
  const shop = await openPage(browser, `${server.base}/order`);
  await logIn(shop, customer);
  await shop.getByRole("button", { name: "Find kitchens nearby" }).click();
  await shop.getByRole("button", { name: "Order from Declined Kitchen" }).click();
  await shop.getByLabel(/Gyoza/).fill("1");
  await shop.getByLabel("Pay with").selectOption("pm_card_chargeDeclined");
  await shop.getByRole("button", { name: "Pay and order" }).click();
  const message = shop.getByTestId("checkout-error");
  await message.filter({ hasText: "Your card was declined" }).waitFor();
  assert.ok(shop.url().endsWith("/order"), "still on the checkout");
  await screenshot(shop, "order-declined");
  const mine = await server.api("/api/v1/orders", { token: customer.token });
  assert.equal(mine.orders.length, 0);
});

test("the merchant board resumes by itself after the server drops its socket", async () => {
  const { owner, merchant, menu } = await server.kitchen(KITCHEN.lat, KITCHEN.lon, "Resume Kitchen");
  const customer = await server.user("customer");
  const place = () => server.api("/api/v1/orders", {
    method: "POST", token: customer.token, headers: { "Idempotency-Key": crypto.randomUUID() },
    body: {
      merchant_id: merchant.id, items: [{ menu_item_id: menu.items[0].id, quantity: 1 }],
      dropoff: { lat: HOME.lat, lon: HOME.lon, address: "2 Home St" }, payment_method: "pm_card_visa",
    },
  });
  const firstOrder = await place();
  const board = await openPage(browser, `${server.base}/merchant`);
  await logIn(board, owner);
  await board.locator(`article[data-order="${firstOrder.id}"]`).waitFor();

  await server.stop();
  await board.getByRole("status").filter({ hasText: "Reconnecting" }).waitFor();
  await screenshot(board, "board-reconnecting");
  await server.start();
  await board.getByRole("status").filter({ hasText: "Live" }).waitFor({ timeout: 30000 });
  await board.locator(`article[data-order="${firstOrder.id}"]`).waitFor();

  const secondOrder = await place();
  await board.locator(`article[data-order="${secondOrder.id}"]`).waitFor();
  assert.equal(await board.locator('[data-column="new"] article').count(), 2);
  await screenshot(board, "board-resumed");
});

test("a tracking link to someone else's order shows not found", async () => {
  const { merchant, menu } = await server.kitchen(KITCHEN.lat, KITCHEN.lon, "Private Kitchen");
  const owner = await server.user("customer");
  const order = await server.api("/api/v1/orders", {
    method: "POST", token: owner.token, headers: { "Idempotency-Key": crypto.randomUUID() },
    body: {
      merchant_id: merchant.id, items: [{ menu_item_id: menu.items[1].id, quantity: 1 }],
      dropoff: { lat: HOME.lat, lon: HOME.lon, address: "3 Home St" }, payment_method: "pm_card_visa",
    },
  });
  const stranger = await server.user("customer");
  const page = await openPage(browser, `${server.base}/track/${order.id}`, { phone: true });
  await logIn(page, stranger);
  await page.getByTestId("not-found").filter({ hasText: "Order not found" }).waitFor();
  assert.equal(await page.locator("ol.timeline").count(), 0, "nothing of the order is shown");
  await screenshot(page, "track-not-found");
});
