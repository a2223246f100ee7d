// A merchant makes an API key for its POS on the keys page, sees it once, the key places an order
// for that kitchen over REST, and revoking it on the page stops it.

import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, test } from "node:test";

import { Server, launch, logIn, openPage, screenshot } from "./harness.mjs";

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

test("a merchant makes a POS key on the keys page, it orders for that kitchen, and revoking it stops it", async () => {
  const { owner, merchant, menu } = await server.kitchen(40.7484, -73.9857);
  const page = await openPage(browser, `${server.base}/merchant`);
  await logIn(page, owner);
  // Signed in (the session is stored) before leaving the board: the link is there from the start.
  await page.locator("#logout").waitFor({ state: "visible" });
  await page.getByRole("link", { name: "API keys" }).click();
  await page.waitForURL(/\/keys$/);
  await page.getByLabel("Name").fill("Front desk POS");
  await page.getByLabel(/orders:write/).check();
  await page.getByLabel("Kitchen", { exact: true }).selectOption(merchant.id);
  await page.getByRole("button", { name: "Create key" }).click();
  const secret = await page.getByTestId("secret").textContent();
  assert.match(secret, /^mk_live_[A-Za-z0-9]{48}$/);
  const row = page.locator("tr[data-state=active]");
  await row.waitFor();
  assert.match(await row.textContent(), /Front desk POS.*orders:read orders:write.*Test Kitchen/);
  assert.ok(!(await page.getByTestId("keys").textContent()).includes(secret), "the list never shows the secret");
  await screenshot(page, "keys-created");

  // The POS places a phone order for its kitchen with the key.
  const order = await server.api("/api/v1/orders", {
    method: "POST", token: secret, headers: { "idempotency-key": randomUUID() },
    body: {
      merchant_id: merchant.id,
      items: [{ menu_item_id: menu.items[0].id, quantity: 1 }],
      dropoff: { lat: 40.7574, lon: -73.9857, address: "5 Customer Court" },
      payment_method: "pm_card_visa",
    },
  });
  assert.equal(order.status, "placed");

  page.once("dialog", (dialog) => dialog.accept());
  await page.getByRole("button", { name: "Revoke Front desk POS" }).click();
  await page.locator("tr[data-state=revoked]").waitFor();
  const refused = await fetch(`${server.base}/api/v1/orders`, { headers: { authorization: `Bearer ${secret}` } });
  assert.equal(refused.status, 401);
  assert.equal((await refused.json()).error.code, "invalid_token");
  await screenshot(page, "keys-revoked");
  assert.deepEqual(page.problems, []);
});
