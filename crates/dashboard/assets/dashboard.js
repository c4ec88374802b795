// The live operations page: draws the city from /dashboard/map, then redraws on every
// snapshot pushed over /dashboard/stream. No libraries, no tiles: the zones are H3 outlines.
"use strict";

const $ = (id) => document.getElementById(id);
const canvas = $("map");
const ctx = canvas.getContext("2d");
const css = getComputedStyle(document.documentElement);
const colour = (name) => css.getPropertyValue(name).trim();
const euros = (minor) => "€" + (minor / 100).toLocaleString("en", { minimumFractionDigits: 2, maximumFractionDigits: 2 });
const number = (n) => n.toLocaleString("en");

let cityMap = null;
let latest = null;
let frames = 0;
const history = []; // [time, counters] pairs, for rates per minute

function project() {
  const w = canvas.width, h = canvas.height;
  const [lat0, lng0] = cityMap.centre;
  const kx = Math.cos((lat0 * Math.PI) / 180);
  const radiusDeg = cityMap.radius_km / 111.32;
  const scale = (Math.min(w, h) / 2 / radiusDeg) * 0.92;
  return ([lat, lng]) => [w / 2 + (lng - lng0) * kx * scale, h / 2 - (lat - lat0) * scale];
}

function polygon(toXY, points) {
  ctx.beginPath();
  points.forEach((p, i) => {
    const [x, y] = toXY(p);
    if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
  });
  ctx.closePath();
}

function draw() {
  if (!cityMap) return;
  const dpr = window.devicePixelRatio || 1;
  const rect = canvas.getBoundingClientRect();
  canvas.width = Math.max(1, Math.round(rect.width * dpr));
  canvas.height = Math.max(1, Math.round(rect.height * dpr));
  const toXY = project();
  ctx.fillStyle = colour("--bg");
  ctx.fillRect(0, 0, canvas.width, canvas.height);

  // The service area and its dispatch regions.
  const [cx, cy] = toXY(cityMap.centre);
  const [ex] = toXY([cityMap.centre[0], cityMap.centre[1] + cityMap.radius_km / 111.32 / Math.cos((cityMap.centre[0] * Math.PI) / 180)]);
  ctx.beginPath();
  ctx.arc(cx, cy, ex - cx, 0, 2 * Math.PI);
  ctx.fillStyle = "#141a21";
  ctx.fill();
  ctx.lineWidth = dpr;
  ctx.strokeStyle = colour("--line");
  for (const region of cityMap.regions) {
    polygon(toXY, region.boundary);
    ctx.stroke();
  }

  if (latest) {
    // Surge cells, redder as they surge harder (the cap is 3.0 by default).
    for (const cell of latest.surge) {
      const level = Math.min(1, (cell.multiplier_milli - 1000) / 2000);
      polygon(toXY, cell.boundary);
      ctx.fillStyle = `rgba(255, 77, 94, ${0.18 + 0.55 * level})`;
      ctx.fill();
      ctx.strokeStyle = colour("--surge");
      ctx.stroke();
    }
    // Active rides: pickup to drop-off, with the car where telemetry puts it.
    ctx.strokeStyle = colour("--ride");
    ctx.globalAlpha = 0.55;
    for (const ride of latest.rides) {
      const [px, py] = toXY(ride.pickup);
      const [dx, dy] = toXY(ride.dropoff);
      ctx.setLineDash(ride.status === "in_progress" ? [] : [4 * dpr, 4 * dpr]);
      ctx.beginPath();
      ctx.moveTo(px, py);
      ctx.lineTo(dx, dy);
      ctx.stroke();
    }
    ctx.setLineDash([]);
    ctx.globalAlpha = 1;
    // Drivers: offline ones are not drawn.
    const fills = [null, colour("--avail"), colour("--busy")];
    for (const [lat, lng, state] of latest.drivers) {
      if (!fills[state]) continue;
      const [x, y] = toXY([lat, lng]);
      ctx.fillStyle = fills[state];
      ctx.beginPath();
      ctx.arc(x, y, 2.5 * dpr, 0, 2 * Math.PI);
      ctx.fill();
    }
  }
  frames += 1;
  document.body.dataset.frames = String(frames);
}

function rate(name, counters) {
  const now = Date.now();
  const old = history.find(([t]) => now - t <= 60000);
  if (!old || now - old[0] < 5000) return "";
  const per = ((counters[name] - old[1][name]) * 60000) / (now - old[0]);
  return `${per.toFixed(0)}/min`;
}

function render(s) {
  latest = s;
  const c = s.counters;
  history.push([Date.now(), c]);
  while (history.length && Date.now() - history[0][0] > 65000) history.shift();
  for (const name of ["requested", "assigned", "completed", "cancelled"]) {
    $(name).textContent = number(c[name]);
    $(`${name}-rate`).textContent = rate(name, c) || "\u00a0";
  }
  $("revenue").textContent = euros(c.revenue_minor);
  $("commission").textContent = `${euros(c.commission_minor)} commission`;
  const l = s.latency;
  $("p50").textContent = l.count ? `${number(l.p50_ms)} ms` : "–";
  $("p99").textContent = l.count ? `${number(l.p99_ms)} ms` : "–";
  $("latency-count").textContent = `${number(l.count)} assignments`;
  for (const [id, e] of [["pickup-eta", s.pickup_eta], ["trip-eta", s.trip_eta]]) {
    $(id).textContent = e.observations ? `${number(Math.round(e.mae_secs))} s` : "–";
    $(`${id}-bias`).textContent = e.observations
      ? `bias ${e.bias_secs >= 0 ? "+" : ""}${number(Math.round(e.bias_secs))} s · ${number(Math.round(e.baseline_mae_secs))} s from distance alone · ${number(e.observations)} rides`
      : "\u00a0";
  }
  $("drivers-available").textContent = number(s.drivers_available);
  $("drivers-busy").textContent = number(s.drivers_busy);
  $("active-rides").textContent = `${number(s.rides.length)} active rides`;

  const rows = s.surge.slice(0, 12).map((cell) =>
    `<tr><td>${cell.cell}</td><td>${(cell.multiplier_milli / 1000).toFixed(2)}</td><td>${cell.demand}</td><td>${cell.supply}</td></tr>`);
  document.querySelector("#surge tbody").innerHTML =
    rows.join("") || '<tr><td colspan="4">no surge</td></tr>';

  const feed = $("feed");
  feed.replaceChildren(...s.feed.map((item) => {
    const li = document.createElement("li");
    const time = document.createElement("time");
    time.textContent = new Date(item.at_ms).toLocaleTimeString("en-GB");
    const kind = document.createElement("span");
    kind.className = `kind k-${item.kind}`;
    kind.textContent = item.kind;
    const text = document.createElement("span");
    text.textContent = item.text; // event text is data, never markup
    li.append(time, kind, text);
    return li;
  }));
  draw();
}

function connect() {
  const source = new EventSource("/dashboard/stream");
  source.addEventListener("open", () => {
    $("link").className = "dot on";
    $("link-text").textContent = "live";
  });
  source.addEventListener("error", () => {
    $("link").className = "dot off";
    $("link-text").textContent = "reconnecting";
  });
  source.addEventListener("snapshot", (e) => render(JSON.parse(e.data)));
}

async function start() {
  const response = await fetch("/dashboard/map");
  cityMap = await response.json();
  $("city").textContent = "· " + cityMap.name;
  draw();
  connect();
}

const tick = () => { $("clock").textContent = new Date().toLocaleTimeString("en-GB"); };
tick();
setInterval(tick, 1000);
window.addEventListener("resize", draw);
start();
