// Real streets and real addresses: the engine on the Helsinki extract (and on osrm-routed when
// MEALKITZ_TEST_OSRM_HOME has it prepared). A customer types an address and picks a suggestion,
// the driver's offer names both ends, and the tracking page draws the streets and the route.

import assert from "node:assert/strict";
import path from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";

import { Server, launch, logIn, openPage, screenshot, sleep, startOsrm } from "./harness.mjs";

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const MAP_DATA = path.join(REPO, "data/helsinki/Helsinki.osm.pbf");
const REGIONS = path.join(REPO, "data/helsinki/regions.geojson");
/** By the Kaivokatu / Mannerheimintie corner, in the west region. */
const KITCHEN = { lat: 60.1699, lon: 24.9384, address: "Kaivokatu 8, Helsinki" };
/** A few blocks south-east of the kitchen. */
const DRIVER_START = { lat: 60.1676, lon: 24.9433 };

let osrm;
let server;
let browser;

before(async () => {
  osrm = await startOsrm();
  if (!osrm.url) console.log(`# no OSRM (${osrm.reason}): routes are straight lines`);
  server = new Server({
    args: ["--map-data", MAP_DATA, "--regions", REGIONS, ...(osrm.url ? ["--osrm-url", osrm.url] : [])],
  });
  await server.start();
  browser = await launch();
});

after(async () => {
  await browser?.close();
  await server?.destroy();
  await osrm?.stop?.();
});

test("an address typed on the checkout is found, ordered to, and the driver's route is drawn on real streets", async () => {
  const { owner } = await server.kitchen(KITCHEN.lat, KITCHEN.lon, "Kamppi Kitchen", KITCHEN.address);
  const customer = await server.user("customer");
  const driver = await server.user("driver");

  const board = await openPage(browser, `${server.base}/merchant`);
  await logIn(board, owner);
  await board.getByRole("status").filter({ hasText: "Live" }).waitFor();

  const app = await openPage(browser, `${server.base}/driver`, { phone: true });
  await logIn(app, driver);
  await app.getByLabel("Start latitude").fill(String(DRIVER_START.lat));
  await app.getByLabel("Start longitude").fill(String(DRIVER_START.lon));
  await app.getByLabel("Speed (km/h)").fill("20");
  await app.getByRole("button", { name: "Go online" }).click();
  await app.getByRole("status").filter({ hasText: "Live" }).waitFor();

  // The customer types, the way people type: no capital, a typo nobody fixes yet.
  const shop = await openPage(browser, `${server.base}/order`);
  await logIn(shop, customer);
  const box = shop.getByRole("combobox", { name: "Deliver to (address)" });
  await box.pressSequentially("qwxzy street 99", { delay: 20 });
  await shop.getByRole("status").filter({ hasText: /No address matches/ }).first().waitFor();
  assert.equal(await box.getAttribute("aria-expanded"), "false", "no list when nothing matches");

  await box.fill("");
  await box.pressSequentially("aleksanterinkatu 5", { delay: 20 });
  const suggestions = shop.getByRole("listbox", { name: "Address suggestions" });
  await suggestions.getByRole("option").first().waitFor();
  const options = await suggestions.getByRole("option").allTextContents();
  assert.ok(options.length >= 1 && options.length <= 10, `a short list: ${options.length}`);
  assert.match(options[0], /Aleksanterinkatu/i, `the best suggestion is on the street typed: ${options}`);
  assert.equal(await box.getAttribute("aria-expanded"), "true");

  // Keyboard: down to the first suggestion, Enter takes it.
  await box.press("ArrowDown");
  await screenshot(shop, "checkout-address");
  const activeId = await box.getAttribute("aria-activedescendant");
  assert.ok(activeId, "the highlighted option is announced");
  assert.equal(await shop.locator(`#${activeId}`).getAttribute("aria-selected"), "true");
  await box.press("Enter");
  const chosen = options[0];
  assert.equal(await box.inputValue(), chosen);
  assert.equal(await box.getAttribute("aria-expanded"), "false");
  await shop.locator("g.marker.dropoff").first().waitFor();

  await shop.getByRole("button", { name: "Find kitchens nearby" }).click();
  await shop.getByRole("button", { name: "Order from Kamppi Kitchen" }).click();
  const checkout = shop.getByRole("form", { name: "Menu of Kamppi Kitchen" });
  await shop.locator("g.marker.pickup").waitFor(); // the kitchen beside the door on the map
  assert.equal(await box.inputValue(), chosen, "the address chosen is the one to deliver to");
  await checkout.getByLabel(/Ramen kit/).fill("1");
  await checkout.getByLabel("Pay with").selectOption("pm_card_visa");
  await shop.getByRole("button", { name: "Pay and order" }).click();
  await shop.waitForURL(/\/track\//);
  const orderId = shop.url().split("/track/")[1];
  await shop.getByTestId("addresses").filter({ hasText: chosen }).waitFor();

  const placed = await server.api(`/api/v1/orders/${orderId}`, { token: customer.token });
  assert.equal(placed.dropoff_address, chosen, "the order goes to the address picked");
  assert.ok(Math.abs(placed.dropoff.lat - 60.168) < 0.01 && Math.abs(placed.dropoff.lon - 24.947) < 0.01,
    `the point is on Aleksanterinkatu: ${JSON.stringify(placed.dropoff)}`);

  // The board accepts; the driver's offer reads as addresses, with the way to the pickup.
  const card = board.locator(`article[data-order="${orderId}"]`);
  await card.getByRole("button", { name: "Accept" }).click();
  const offer = app.getByRole("region", { name: "New delivery offer" });
  await offer.waitFor();
  const route = await offer.getByTestId("offer-route").textContent();
  assert.ok(route.startsWith("Pickup Kaivokatu 8") && route.endsWith(` → dropoff ${chosen}`), `addresses, not coordinates: ${route}`);
  await offer.getByTestId("offer-eta").filter({ hasText: /^About \d+ min to the pickup$/ }).waitFor();
  await app.locator(".map g.marker.pickup").waitFor();
  await screenshot(app, "driver-offer");
  await offer.getByRole("button", { name: "Accept" }).click();
  await app.getByRole("region", { name: "Your delivery" }).waitFor();
  await app.locator(".map path.route").waitFor();

  // Tracking: the streets around the delivery, the route line, the moving driver, the credit.
  await shop.getByTestId("dispatch").filter({ hasText: "Driver assigned" }).waitFor();
  const map = shop.locator("svg.map");
  await map.locator("path.street").first().waitFor();
  const classes = await map.locator("path.street").evaluateAll((paths) => paths.map((p) => p.getAttribute("data-class")));
  assert.ok(classes.length >= 3, `several kinds of street: ${classes}`);
  assert.ok(classes.some((c) => ["primary", "secondary", "tertiary"].includes(c)), `major roads among them: ${classes}`);
  await map.getByRole("img", { name: "The driver's route to the kitchen" }).waitFor();
  await shop.getByTestId("route").filter({ hasText: osrm.url ? /by road$/ : /straight line/ }).waitFor();
  await shop.getByText("© OpenStreetMap contributors, ODbL").waitFor();
  assert.ok(await shop.getByText("© OpenStreetMap contributors, ODbL").isVisible(), "the attribution is visible");
  await shop.locator("g.marker.driver").waitFor();
  await shop.getByTestId("eta").filter({ hasText: /Arriving in about \d+ min/ }).waitFor();
  await sleep(1500); // let the driver's dot glide a little along the route
  await screenshot(shop, "tracking-route");

  // Picked up: the route is now the way to the door.
  await board.locator(`article[data-order="${orderId}"]`).getByRole("button", { name: "Mark ready" }).click();
  await app.locator('section[data-status="ready"]').waitFor();
  await app.getByRole("button", { name: "Picked up" }).click();
  await map.getByRole("img", { name: "The driver's route to you" }).waitFor();

  // The board shows its kitchen on the streets too, and where the open order goes.
  await board.locator(".board-map path.street").first().waitFor();
  await board.locator(`.board-map g.marker[data-name="order-${orderId}"]`).waitFor();
  await screenshot(board, "board-streets");

  for (const page of [board, app, shop]) assert.deepEqual(page.problems, [], "no script errors");
});

test("a point clicked on the checkout map is named by the nearest address", async () => {
  await server.kitchen(KITCHEN.lat, KITCHEN.lon, "Click Kitchen", KITCHEN.address);
  const customer = await server.user("customer");
  const shop = await openPage(browser, `${server.base}/order`);
  await logIn(shop, customer);
  const map = shop.getByRole("group", { name: "Map: click to pick the delivery point" });
  await map.locator("path.street").first().waitFor();
  const area = await map.boundingBox();
  await map.click({ position: { x: area.width * 0.55, y: area.height * 0.5 } });
  const box = shop.getByRole("combobox", { name: "Deliver to (address)" });
  // The box first holds the point, then the name the engine found for it.
  await shop.waitForFunction((input) => /[A-Za-zÄÖÅäöå]/.test(input.value), await box.elementHandle());
  const label = await box.inputValue();
  assert.doesNotMatch(label, /^-?\d+\.\d+, -?\d+\.\d+$/, `named, not coordinates: ${label}`);
  await shop.locator("g.marker.dropoff").waitFor();
  await shop.getByRole("button", { name: "Find kitchens nearby" }).click();
  await shop.getByRole("button", { name: "Order from Click Kitchen" }).waitFor();
  assert.deepEqual(shop.problems, [], "no script errors");
});
