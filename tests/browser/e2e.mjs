// End to end against a real `gabbro serve` (embedded worker): started by
// crates/ui/tests/e2e.rs after `gabbro deploy` of fixtures/e2e-project.yaml.
// Sign in, open the diagram, post to the webhook, watch the run's logs,
// read input and output, fix the failing job, retry from its step and see
// the new run succeed, rerun from history, and a viewer refused an edit.
import { launchChromium } from "./lib.mjs";
import { mkdirSync } from "node:fs";
import path from "node:path";
import assert from "node:assert/strict";

const BASE = process.env.BASE_URL;
const SHOTS = process.env.SHOTS_DIR;
const ADMIN_PASSWORD = process.env.ADMIN_PASSWORD;
if (!BASE || !SHOTS || !ADMIN_PASSWORD) {
  console.error("BASE_URL, SHOTS_DIR and ADMIN_PASSWORD must be set (run through crates/ui/tests/e2e.rs)");
  process.exit(2);
}
mkdirSync(SHOTS, { recursive: true });
const browser = await launchChromium();
async function shot(page, name) {
  const file = path.join(SHOTS, `e2e-${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  console.log(`screenshot ${file}`);
}
const log = (m) => console.log(`ok - ${m}`);
const NEW_PASSWORD = "e2e-admin-password";

async function signIn(page, email, password) {
  await page.goto(`${BASE}/sign-in`);
  await page.fill("input[name=email]", email);
  await page.fill("input[name=password]", password);
  await Promise.all([page.waitForNavigation(), page.click("button[type=submit]")]);
}
async function changePassword(page, current, next) {
  await page.fill("input[name=current]", current);
  await page.fill("input[name=new]", next);
  await page.fill("input[name=confirm]", next);
  await Promise.all([page.waitForURL("**/projects"), page.click("form.stack button[type=submit]")]);
}
async function waitForState(page, states, timeout = 60000) {
  await page.waitForFunction((s) => {
    const b = document.getElementById("run-state");
    return b && s.includes(b.textContent.trim());
  }, states, { timeout });
}

try {
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 860 } });
  const page = await ctx.newPage();
  await page.goto(`${BASE}/`);
  assert.equal(new URL(page.url()).pathname, "/sign-in");
  await signIn(page, "admin@localhost", ADMIN_PASSWORD);
  await page.waitForURL("**/password");
  await changePassword(page, ADMIN_PASSWORD, NEW_PASSWORD);
  log("first admin signed in with admin.password and changed it");

  await page.getByRole("link", { name: "e2e-clinic" }).click();
  const projectUrl = page.url();
  await page.getByRole("link", { name: "intake" }).click();
  await page.locator("svg.diagram").waitFor();
  assert.equal(await page.locator("svg.diagram .node.job").count(), 2);
  const hook = await page.locator(".webhook-url").first().innerText();
  assert.match(hook, /\/i\/e2e-intake$/);
  await shot(page, "diagram");
  log("deployed workflow drawn; webhook URL shown");

  // Post to the webhook, as a client system would.
  const r = await fetch(hook, { method: "POST", headers: { "content-type": "application/json" },
    body: JSON.stringify({ patients: [{ name: "Ada" }, { name: "Grace" }] }) });
  assert.equal(r.status, 200);
  const { work_order_id } = await r.json();
  assert.ok(work_order_id);
  log(`webhook accepted: work order ${work_order_id}`);

  // Open its run from history and watch it.
  await page.goto(`${projectUrl}/history`);
  await page.locator(`tr.wo[data-id="${work_order_id}"] a.run-link`).first().click();
  await page.getByText(/normalising 2 patients/).waitFor({ timeout: 60000 });
  await waitForState(page, ["failed"]);
  await page.getByText(/normalising 2 patients/).waitFor();
  await page.getByText(/the registry refused the batch/).first().waitFor();
  const html = await page.content();
  assert.ok(html.includes("Grace"), "the input dataclip is shown");
  assert.equal(await page.locator("tr.step").count(), 2);
  await shot(page, "failed-run");
  const failedRunUrl = page.url();
  log("run logs appeared; the run failed at step 2 with its error; input shown");

  // Fix the failing job.
  await page.locator("tr.step").nth(1).getByRole("link", { name: "send" }).click();
  await page.fill("textarea[name=body]", "fn(state => {\n  console.log('sent ' + state.data.count + ' patients');\n  return state;\n});");
  await page.click("#job-form button[type=submit]");
  await page.getByText("Saved as a new version").waitFor();
  log("job fixed in the editor");

  // Retry from the failed step; the new run succeeds.
  await page.goto(failedRunUrl);
  await Promise.all([
    page.waitForURL((u) => u.pathname.includes("/runs/") && u.href !== failedRunUrl),
    page.locator("tr.step").nth(1).locator("button.retry").click(),
  ]);
  await waitForState(page, ["success"], 90000);
  await page.getByText(/sent 2 patients/).waitFor();
  await shot(page, "retried-run-succeeded");
  log("retried from step 2 on the new version: success, logs show the fix");

  // Rerun from history.
  await page.goto(`${projectUrl}/history`);
  await page.locator(`tr.wo[data-id="${work_order_id}"] input.wo-select`).check();
  await Promise.all([page.waitForURL("**rerun=1**"), page.click("#rerun-selected")]);
  await page.waitForFunction((id) => {
    const row = document.querySelector(`tr.wo[data-id="${id}"]`);
    return row && row.querySelectorAll("a.run-link").length >= 3;
  }, work_order_id, { timeout: 5000 }).catch(() => {});
  for (let i = 0; i < 60; i++) {
    await page.goto(`${projectUrl}/history`);
    const links = page.locator(`tr.wo[data-id="${work_order_id}"] a.run-link`);
    if ((await links.count()) >= 3 && (await links.last().innerText()) === "success") break;
    await page.waitForTimeout(1000);
  }
  assert.equal(await page.locator(`tr.wo[data-id="${work_order_id}"] a.run-link`).last().innerText(), "success");
  await shot(page, "history-after-rerun");
  log("rerun from history succeeded");

  // A viewer: created by the admin, added to the project, refused an edit.
  await page.goto(`${BASE}/users`);
  await page.fill("#new-user input[name=email]", "viewer@e2e.org");
  await page.fill("#new-user input[name=password]", "viewer-temporary-1");
  await page.click("#new-user button[type=submit]");
  await page.goto(`${projectUrl}/members`);
  await page.fill("#add-member input[name=email]", "viewer@e2e.org");
  await page.selectOption("#add-member select[name=role]", "viewer");
  await page.click("#add-member button[type=submit]");
  await page.getByText("Members updated.").waitFor();
  const jobUrl = await page.evaluate(() => null);
  await ctx.close();

  const vctx = await browser.newContext({ viewport: { width: 1280, height: 860 } });
  const v = await vctx.newPage();
  await signIn(v, "viewer@e2e.org", "viewer-temporary-1");
  await v.waitForURL("**/password");
  await changePassword(v, "viewer-temporary-1", "viewer-own-password");
  await v.getByRole("link", { name: "e2e-clinic" }).click();
  await v.getByRole("link", { name: "intake" }).click();
  await v.locator("svg.diagram a.node").first().click();
  await v.getByText("your role does not allow editing").waitFor();
  const status = await v.evaluate(async () => {
    const form = new FormData(document.getElementById("job-form"));
    form.set("body", "fn(state => state)");
    const res = await fetch(location.pathname, { method: "POST", body: new URLSearchParams(form), redirect: "manual" });
    return res.status;
  });
  assert.equal(status, 403);
  log("viewer refused an edit");
  void jobUrl;
  await vctx.close();
  console.log("all end-to-end checks passed");
} catch (e) {
  console.error(`not ok - ${e.stack || e}`);
  process.exitCode = 1;
} finally {
  await browser.close();
}
