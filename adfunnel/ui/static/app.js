// The report viewer: reads the report API of this origin and draws what it answers.
// Numbers are shown as the API sends them (revenue strings untouched); floating point is
// used only for the length of a bar.
"use strict";

const schema = JSON.parse(document.getElementById("schema").textContent);
// sessionStorage: the key lives as long as the tab, never on disk across sessions.
const KEY_STORE = "adfunnel.reportsApiKey";
const FILTERS = ["from", "to", "source", "funnelStage", "eventType", "campaignId", "interval", "top"];
const DEFAULTS = { top: "10" };
const INTERVAL_MS = { minute: 60e3, hour: 3600e3, day: 86400e3 };
let shownSearch = location.search; // the query whose filters the sections show

const filterForm = document.getElementById("filters");
const lookupForm = document.getElementById("lookup-form");
const keyDialog = document.getElementById("key-dialog");
const keyForm = document.getElementById("key-form");

class ApiError extends Error {
  constructor(status, body) {
    const text = body && body.message ? body.message : `HTTP ${status}`;
    super(body && body.error ? `${status} ${body.error}: ${text}` : text);
    this.status = status;
  }
}

// ---- talking to the reporter ----------------------------------------------------------

let keyPrompt = null;
let keyGiven = false;
// When the prompt was last dismissed: the requests begun before it were declined with it, so
// their 401s, however late they come, do not ask again; a later action's requests do.
let keyDeclinedAt = -Infinity;

keyForm.addEventListener("submit", (event) => {
  const key = keyForm.elements.key.value.trim();
  // A header value must be visible ASCII: fetch would refuse anything else before sending.
  if (!/^[\x21-\x7e]+$/.test(key)) {
    event.preventDefault();
    keyDialog.querySelector('[data-field="key-message"]').textContent =
      "an API key is visible ASCII characters, without spaces";
    return;
  }
  keyGiven = true;
  sessionStorage.setItem(KEY_STORE, key);
});

// One prompt for every report waiting on a key; each retries once it is given, and each
// fails with the API's message if the prompt is dismissed instead.
function askForKey(message) {
  if (!keyPrompt) {
    keyPrompt = new Promise((resolve, reject) => {
      keyGiven = false;
      keyDialog.querySelector('[data-field="key-message"]').textContent = message;
      keyForm.elements.key.value = "";
      keyDialog.addEventListener(
        "close",
        () => {
          keyPrompt = null;
          if (keyGiven) resolve();
          else {
            keyDeclinedAt = performance.now();
            reject(new ApiError(401, { error: "unauthorized", message }));
          }
        },
        { once: true },
      );
      keyDialog.showModal();
    });
  }
  return keyPrompt;
}

async function api(path, params, onRequest) {
  const url = new URL(path, location.href);
  for (const [name, value] of Object.entries(params)) {
    if (value !== "" && value !== null && value !== undefined) url.searchParams.set(name, value);
  }
  onRequest(url.pathname + url.search);
  const begun = performance.now();
  for (;;) {
    const headers = { Accept: "application/json" };
    const key = sessionStorage.getItem(KEY_STORE);
    if (key) headers.Authorization = `Bearer ${key}`;
    let response;
    try {
      response = await fetch(url, { headers });
    } catch (error) {
      throw new ApiError(0, { message: `the reporter could not be reached (${error.message})` });
    }
    let body = null;
    try {
      body = await response.json();
    } catch {
      body = null;
    }
    if (response.status === 401) {
      if (begun <= keyDeclinedAt) throw new ApiError(401, body);
      // A key given while this request was under way is tried before asking again.
      if (sessionStorage.getItem(KEY_STORE) === key) {
        await askForKey(body && body.message ? body.message : "this report needs an API key");
      }
      continue;
    }
    if (!response.ok) throw new ApiError(response.status, body);
    return body;
  }
}

// ---- filters and the address bar ------------------------------------------------------

function filterValues() {
  const values = {};
  for (const name of FILTERS) values[name] = filterForm.elements[name].value.trim();
  return values;
}

function eventTypeOptions() {
  const { source, funnelStage } = filterValues();
  // An unknown source or stage (from an edited link) offers every type: the API names it.
  const sources = schema.sources.includes(source) ? [source] : schema.sources;
  const stages = schema.stages.includes(funnelStage) ? [funnelStage] : schema.stages;
  const types = new Set();
  for (const s of sources) for (const stage of stages) for (const t of schema.eventTypes[s][stage]) types.add(t);
  const select = filterForm.elements.eventType;
  const current = select.value;
  select.replaceChildren(option("", "any"), ...[...types].sort().map((t) => option(t, t)));
  // A type the other filters no longer allow is dropped rather than sent and refused.
  select.value = types.has(current) ? current : "";
}

function option(value, label) {
  const node = document.createElement("option");
  node.value = value;
  node.textContent = label;
  return node;
}

function fromAddress() {
  const query = new URLSearchParams(location.search);
  for (const name of FILTERS) {
    const value = query.get(name) ?? DEFAULTS[name] ?? "";
    const field = filterForm.elements[name];
    if (name === "eventType") eventTypeOptions();
    if (field.tagName === "SELECT" && ![...field.options].some((o) => o.value === value)) {
      // An unknown value is kept as an option, so the API names what is wrong with it.
      field.append(option(value, value));
    }
    field.value = value;
  }
  lookupForm.elements.eventId.value = query.get("event") ?? "";
}

function toAddress() {
  const query = new URLSearchParams();
  for (const [name, value] of Object.entries(filterValues())) {
    if (value !== "" && value !== DEFAULTS[name]) query.set(name, value);
  }
  const event = lookupForm.elements.eventId.value.trim();
  if (event) query.set("event", event);
  const search = query.toString();
  const address = location.pathname + (search ? `?${search}` : "") + location.hash;
  if (address !== location.pathname + location.search + location.hash) history.pushState(null, "", address);
  shownSearch = location.search;
}

// ISO-8601 text of a UTC time, to the second: the API reads a time without an offset as UTC.
function utcText(date) {
  return date.toISOString().slice(0, 19);
}

// ---- drawing ----------------------------------------------------------------------------

function h(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  node.append(...children.map((c) => (c instanceof Node ? c : String(c ?? "—"))));
  return node;
}

function count(value) {
  return Number.isSafeInteger(value) ? value.toLocaleString("en-US") : String(value ?? "—");
}

function showCount(section, name, value) {
  const node = field(section, name);
  node.textContent = count(value);
  node.dataset.value = value;
}

function num(value, shown = count(value)) {
  return h("td", { class: "num", "data-value": value ?? "" }, shown);
}

// A bar as long as `value` of `max`; its length is the only thing computed in floating point.
function bar(value, max) {
  const cell = h("td", { class: "bar" });
  const fill = h("span");
  const share = max > 0 ? Math.max(0, Number(value)) / max : 0;
  fill.style.width = `${(100 * share).toFixed(2)}%`;
  cell.append(fill);
  return cell;
}

function rows(table, items, cells) {
  table.tBodies[0].replaceChildren(...items.map((item) => h("tr", {}, ...cells(item))));
  if (items.length === 0) {
    const columns = table.tHead ? table.tHead.rows[0].cells.length : 2;
    table.tBodies[0].append(h("tr", { class: "empty" }, h("td", { colspan: columns }, "none in this range")));
  }
}

function field(section, name) {
  return section.querySelector(`[data-field="${name}"]`);
}

const SVG = "http://www.w3.org/2000/svg";

function svg(tag, attributes = {}, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

// A bar per bucket on a time axis: empty buckets (which the API leaves out) stay gaps.
function seriesChart(figure, series, interval, value, label) {
  figure.replaceChildren();
  if (!interval) {
    figure.append(h("figcaption", {}, "Choose an interval to see a series."));
    return;
  }
  if (series.length === 0) {
    figure.append(h("figcaption", {}, "No events in this range."));
    return;
  }
  const width = 720;
  const height = 180;
  const left = 96;
  const bottom = 22;
  const step = INTERVAL_MS[interval];
  const first = Date.parse(series[0].bucket);
  const last = Date.parse(series[series.length - 1].bucket) + step;
  const span = Math.max(last - first, step);
  // The tallest bucket labels the axis with its value as the API sent it.
  const peak = series.reduce((a, p) => (Number(value(p)) > Number(value(a)) ? p : a));
  const max = Math.max(Number(value(peak)), 0);
  const chart = svg("svg", {
    viewBox: `0 0 ${width} ${height}`,
    role: "img",
    "aria-label": `${label} per ${interval}`,
  });
  const plot = width - left - 8;
  const tall = height - bottom - 8;
  chart.append(
    svg("line", { x1: left, y1: 8 + tall, x2: width - 8, y2: 8 + tall, class: "axis" }),
    svg("text", { x: left - 6, y: 14, class: "tick end" }, typeof value(peak) === "number" ? count(value(peak)) : value(peak)),
    svg("text", { x: left - 6, y: 8 + tall, class: "tick end" }, "0"),
    svg("text", { x: left, y: height - 6, class: "tick" }, series[0].bucket),
    svg("text", { x: width - 8, y: height - 6, class: "tick end" }, series[series.length - 1].bucket),
  );
  const barWidth = Math.max((plot * step) / span - 1, 1);
  for (const point of series) {
    const x = left + (plot * (Date.parse(point.bucket) - first)) / span;
    const tallness = max > 0 ? (tall * Number(value(point))) / max : 0;
    const rect = svg("rect", {
      x: x.toFixed(2),
      y: (8 + tall - tallness).toFixed(2),
      width: barWidth.toFixed(2),
      height: tallness.toFixed(2),
      "data-bucket": point.bucket,
      "data-value": value(point),
    });
    rect.append(svg("title", {}, `${point.bucket}: ${value(point)}`));
    chart.append(rect);
  }
  figure.append(chart, h("figcaption", {}, `${label} per ${interval} (UTC), ${series.length} buckets with data`));
}

// ---- the sections -----------------------------------------------------------------------

const generations = {};

async function load(id, path, params, render) {
  const section = document.getElementById(id);
  const status = section.querySelector(".status");
  const generation = (generations[id] = (generations[id] ?? 0) + 1);
  section.dataset.state = "loading";
  section.setAttribute("aria-busy", "true");
  status.textContent = "Loading…";
  try {
    const answer = await api(path, params, (request) => {
      section.dataset.request = request;
    });
    if (generation !== generations[id]) return; // a newer request owns the section
    render(section, answer, params);
    section.dataset.state = "ready";
    status.textContent = "";
  } catch (error) {
    if (generation !== generations[id]) return;
    section.dataset.state = "error";
    status.textContent = error.message;
  } finally {
    if (generation === generations[id]) section.setAttribute("aria-busy", "false");
  }
}

let breakdown = [];
let breakdownOrder = { key: "count", descending: true };

function renderBreakdown(section) {
  const { key, descending } = breakdownOrder;
  const sorted = [...breakdown].sort((a, b) => {
    // Code-point order: the same in every browser and locale.
    const [x, y] = [a[key], b[key]];
    const order = typeof x === "number" ? x - y : x < y ? -1 : x > y ? 1 : 0;
    return descending ? -order : order;
  });
  const table = field(section, "breakdown");
  for (const th of table.tHead.querySelectorAll("th[data-key]")) {
    th.setAttribute("aria-sort", th.dataset.key === key ? (descending ? "descending" : "ascending") : "none");
  }
  const cells = (r) => [h("td", {}, r.source), h("td", {}, r.funnelStage), h("td", {}, r.eventType), num(r.count)];
  ranked(table, sorted, Infinity, cells, (r) => r.count);
}

function renderEvents(section, answer, params) {
  showCount(section, "total", answer.total);
  breakdown = answer.breakdown;
  renderBreakdown(section);
  showCount(section, "breakdown-total", answer.total);
  seriesChart(field(section, "series"), answer.series ?? [], params.interval, (p) => p.count, "events");
}

function ranked(table, items, top, cells, value) {
  const shown = items.slice(0, top);
  const most = Math.max(0, ...items.map((i) => Number(value(i))));
  rows(table, shown, (item) => [...cells(item), bar(value(item), most)]);
  if (items.length > shown.length) {
    const columns = table.tHead.rows[0].cells.length;
    table.tBodies[0].append(h("tr", { class: "more" }, h("td", { colspan: columns }, `and ${items.length - shown.length} more`)));
  }
}

function topCount() {
  const top = Number.parseInt(filterValues().top, 10);
  // 1000: the most samples /reports/rejected gives.
  return Number.isFinite(top) && top > 0 ? Math.min(top, 1000) : 10;
}

function renderRevenue(section, answer, params) {
  field(section, "total").textContent = answer.total;
  showCount(section, "transactions", answer.transactions);
  const money = (item) => [num(item.revenue, item.revenue), num(item.transactions)];
  ranked(field(section, "bySource"), answer.bySource, Infinity, (i) => [h("td", {}, i.source), ...money(i)], (i) => i.revenue);
  ranked(field(section, "byCampaign"), answer.byCampaign, topCount(), (i) => [h("td", {}, i.campaignId), ...money(i)], (i) => i.revenue);
  seriesChart(field(section, "series"), answer.series ?? [], params.interval, (p) => p.revenue, "revenue");
}

function renderDemographics(section, answer) {
  const top = topCount();
  const users = (item) => item.users;
  const named = (...keys) => (item) => [...keys.map((k) => h("td", {}, item[k])), num(item.users)];
  const facebook = section.querySelector('[data-part="facebook"]');
  const tiktok = section.querySelector('[data-part="tiktok"]');
  facebook.hidden = !answer.facebook;
  tiktok.hidden = !answer.tiktok;
  if (answer.facebook) {
    const f = answer.facebook;
    showCount(section, "facebook-users", f.users);
    ranked(field(section, "facebook-age"), f.age, Infinity, named("bucket"), users);
    ranked(field(section, "facebook-gender"), f.gender, Infinity, named("gender"), users);
    ranked(field(section, "facebook-countries"), f.countries, top, named("country"), users);
    ranked(field(section, "facebook-cities"), f.cities, top, named("city", "country"), users);
  }
  if (answer.tiktok) {
    const t = answer.tiktok;
    showCount(section, "tiktok-users", t.users);
    const stats = field(section, "tiktok-followers");
    stats.tBodies[0].replaceChildren(
      ...["min", "max", "avg", "median"].map((name) => h("tr", { "data-stat": name }, h("th", {}, name), num(t.followers[name]))),
    );
    ranked(field(section, "tiktok-followerBuckets"), t.followerBuckets, Infinity, named("bucket"), users);
    ranked(field(section, "tiktok-devices"), t.devices, Infinity, named("device"), users);
    ranked(field(section, "tiktok-countries"), t.countries, top, named("country"), users);
  }
}

function replayText(replay) {
  if (!replay) return "not replayed";
  return `${replay.outcome} (${replay.replayedAt})`;
}

function renderRejected(section, answer) {
  showCount(section, "total", answer.total);
  showCount(section, "replayed", answer.replay.replayed);
  showCount(section, "notReplayed", answer.replay.notReplayed);
  ranked(field(section, "byReason"), answer.byReason, topCount(), (i) => [h("td", {}, i.reason), num(i.count)], (i) => i.count);
  rows(field(section, "samples"), answer.samples, (s) => {
    const payload = s.payload === null ? "—" : JSON.stringify(s.payload);
    return [
      h("td", {}, s.receivedAt),
      h("td", {}, s.reason),
      h("td", {}, s.correlationId),
      h("td", {}, replayText(s.replay)),
      h("td", { class: "payload", title: payload }, payload.length > 160 ? `${payload.slice(0, 160)}…` : payload),
    ];
  });
}

function renderEvent(section, answer) {
  field(section, "correlationId").textContent = answer.correlationId ?? "—";
  field(section, "receivedAt").textContent = answer.receivedAt;
  field(section, "storedAt").textContent = answer.storedAt ?? "—";
  field(section, "event").textContent = JSON.stringify(answer.event, null, 2);
}

function refresh() {
  const f = filterValues();
  const time = { from: f.from, to: f.to };
  load("events", "events", { ...time, source: f.source, funnelStage: f.funnelStage, eventType: f.eventType, interval: f.interval }, renderEvents);
  load("revenue", "revenue", { ...time, source: f.source, campaignId: f.campaignId, interval: f.interval }, renderRevenue);
  load("demographics", "demographics", { ...time, source: f.source }, renderDemographics);
  load("rejected", "rejected", { ...time, limit: String(topCount()) }, renderRejected);
  lookup();
}

function lookup() {
  const id = lookupForm.elements.eventId.value.trim();
  const section = document.getElementById("lookup");
  if (!id) {
    generations.lookup = (generations.lookup ?? 0) + 1; // a lookup in flight no longer shows
    section.dataset.state = "idle";
    section.setAttribute("aria-busy", "false");
    section.querySelector(".status").textContent = "Enter an eventId to see its stored payload and trace.";
    return;
  }
  load("lookup", `events/${encodeURIComponent(id)}`, {}, renderEvent);
}

// ---- wiring -------------------------------------------------------------------------------

for (const source of schema.sources) filterForm.elements.source.append(option(source, source));
for (const stage of schema.stages) filterForm.elements.funnelStage.append(option(stage, stage));

filterForm.addEventListener("change", (event) => {
  if (event.target.name === "source" || event.target.name === "funnelStage") eventTypeOptions();
  toAddress();
  refresh();
});
filterForm.addEventListener("submit", (event) => {
  event.preventDefault();
  toAddress();
  refresh();
});
for (const button of filterForm.querySelectorAll("button[data-range]")) {
  button.addEventListener("click", () => {
    const seconds = Number(button.dataset.range);
    filterForm.elements.from.value = seconds ? utcText(new Date(Date.now() - seconds * 1000)) : "";
    filterForm.elements.to.value = "";
    toAddress();
    refresh();
  });
}
lookupForm.addEventListener("submit", (event) => {
  event.preventDefault();
  toAddress();
  lookup();
});
document.querySelector("#events thead").addEventListener("click", (event) => {
  const th = event.target.closest("th[data-key]");
  if (!th) return;
  const key = th.dataset.key;
  breakdownOrder = { key, descending: breakdownOrder.key === key ? !breakdownOrder.descending : key === "count" };
  renderBreakdown(document.getElementById("events"));
});
// The nav links' #fragments fire popstate too: only a change of the query reloads.
window.addEventListener("popstate", () => {
  if (location.search === shownSearch) return;
  shownSearch = location.search;
  fromAddress();
  refresh();
});

fromAddress();
refresh();
