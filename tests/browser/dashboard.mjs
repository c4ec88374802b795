// Opens the live dashboard of a running `bimride up` in headless Chromium and waits for it to
// come alive: counters above zero that change without a reload, a map with drivers drawn, and
// the pickup ETA's accuracy.
// Usage: node dashboard.mjs URL SCREENSHOT.png. Exits non-zero, saying why, when it does not.
import { chromium } from "playwright-core";

const [url, screenshot] = process.argv.slice(2);
if (!url || !screenshot) {
  console.error("usage: node dashboard.mjs URL SCREENSHOT.png");
  process.exit(2);
}

const browser = await chromium.launch({
  executablePath: process.env.BIMRIDE_CHROMIUM ?? "/usr/bin/chromium",
  args: [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
});
const fail = async (why) => {
  console.error(`dashboard check failed: ${why}`);
  await page.screenshot({ path: screenshot }).catch(() => {});
  await browser.close();
  process.exit(1);
};

const page = await browser.newPage({ viewport: { width: 1600, height: 1000 } });
const external = [];
page.on("request", (r) => {
  if (!r.url().startsWith(new URL(url).origin)) external.push(r.url());
});
const broken = [];
page.on("response", (r) => {
  if (r.status() >= 400) broken.push(`${r.status()} ${r.url()}`);
});
await page.goto(url);

const counter = (id) => page.$eval(`#${id}`, (e) => Number(e.textContent.replace(/[^0-9]/g, "")));
const frames = () => page.evaluate(() => Number(document.body.dataset.frames ?? 0));
// Frames first: a snapshot landing between the reads then shows in the counters, never in the
// frames alone, so a later snapshot is needed to pass the checks below.
const read = async () => ({
  frames: await frames(),
  requested: await counter("requested"),
  assigned: await counter("assigned"),
  completed: await counter("completed"),
});

// Live: the link is up and the counters are above zero.
await page.waitForFunction(
  () => document.getElementById("link").classList.contains("on")
    && Number(document.getElementById("assigned").textContent.replace(/[^0-9]/g, "")) > 0,
  null, { timeout: 60000 },
).catch(() => fail("no live counters within 60 s"));
const first = await read();

// Changing: the counters move again with no reload.
await page.waitForFunction(
  (before) => Number(document.getElementById("requested").textContent.replace(/[^0-9]/g, "")) > before,
  first.requested, { timeout: 60000 },
).catch(() => fail(`requested stayed at ${first.requested} for 60 s`));
await page.waitForFunction(
  (before) => Number(document.body.dataset.frames ?? 0) > before,
  first.frames, { timeout: 60000 },
).catch(() => fail(`the map was not redrawn after frame ${first.frames}`));

// Drawn: drivers' dots in their colours on the canvas.
const pixels = await page.$eval("#map", (canvas) => {
  const { data } = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height);
  let available = 0, busy = 0;
  for (let i = 0; i < data.length; i += 4) {
    const [r, g, b] = [data[i], data[i + 1], data[i + 2]];
    if (r === 0x3d && g === 0xdc && b === 0x84) available += 1;
    if (r === 0xff && g === 0xb0 && b === 0x20) busy += 1;
  }
  return { available, busy, width: canvas.width, height: canvas.height };
});
if (pixels.width < 200 || pixels.height < 200) await fail(`the map is ${pixels.width}x${pixels.height}`);
if (pixels.available + pixels.busy < 50) await fail(`only ${pixels.available + pixels.busy} driver pixels drawn`);
// ETA accuracy: the pickup ETA's mean error and bias, once the tracker has observed legs.
await page.waitForFunction(
  () => /\d s$/.test(document.getElementById("pickup-eta").textContent)
    && /^bias [+-]?\d/.test(document.getElementById("pickup-eta-bias").textContent),
  null, { timeout: 90000 },
).catch(() => fail("no pickup ETA accuracy within 90 s"));
const eta = await page.$eval("#pickup-eta", (e) => `${e.textContent} (${e.nextElementSibling.textContent})`);
if (external.length) await fail(`the page fetched from outside: ${external.join(", ")}`);
if (broken.length) await fail(`the page's requests failed: ${broken.join(", ")}`);

await page.screenshot({ path: screenshot });
console.log(JSON.stringify({ first, second: await read(), pixels, eta, screenshot }));
await browser.close();
