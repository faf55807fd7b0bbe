// The operator's status page served at GET /: one self-contained HTML document (inline CSS and
// JS, no external assets, embedded here so it works in a compiled binary or a bundle) that
// fetches /status every 2 s and draws connection, money, backends, models, jobs and earnings;
// the charts (charts.ts) are drawn by the server into each page and refreshed from /charts.

const STYLE = `
:root { color-scheme: light dark; --ok: #1a7f37; --bad: #cf222e; --warn: #9a6700; --dim: #6e7781; }
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5rem; max-width: 1200px; }
h1 { font-size: 1.3rem; margin: 0 0 .25rem; }
h2 { font-size: 1rem; margin: 1.5rem 0 .5rem; }
.sub, .dim { color: var(--dim); }
.badge { display: inline-block; padding: .1rem .5rem; border-radius: 1rem; font-weight: 600; color: #fff; background: var(--dim); }
.badge.authenticated, .badge.up { background: var(--ok); }
.badge.backoff, .badge.down, .badge.stopped { background: var(--bad); }
.badge.connecting, .badge.draining, .badge.loading, .badge.no_api_key { background: var(--warn); }
.cards { display: flex; flex-wrap: wrap; gap: .75rem; margin: 1rem 0; }
.card { border: 1px solid #8884; border-radius: .5rem; padding: .5rem .9rem; min-width: 9rem; }
.card .v { font-size: 1.3rem; font-weight: 600; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: .25rem .6rem .25rem 0; border-bottom: 1px solid #8883; vertical-align: top; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; }
code { font-size: 12px; }
#error { display: none; padding: .5rem .9rem; border-radius: .5rem; background: #cf222e22; border: 1px solid var(--bad); }
#error.shown { display: block; }
.charts { display: flex; flex-wrap: wrap; gap: 1rem; }
.charts figure { margin: 0; }
.charts figcaption { font-weight: 600; margin-bottom: .25rem; }
.chart { max-width: 100%; height: auto; }
.chart .axis { stroke: #8888; stroke-width: 1; }
.chart .tick { fill: var(--dim); font-size: 11px; }
.chart .bar { fill: var(--ok); }
.chart .line { stroke: #0969da; stroke-width: 1.5; }
.chart .dot { fill: #0969da; }
`;

const SCRIPT = `
"use strict";
const $ = (id) => document.getElementById(id);
const el = (tag, text, cls) => {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
};
const num = (n) => Number(n).toLocaleString("en-US");
const usdc = (micro) => (Number(micro) / 1e6).toFixed(6);
const perM = (micro) => (Number(micro) / 1e6).toFixed(4);
const ms = (v) => (v === null || v === undefined ? "–" : v < 1000 ? v + " ms" : (v / 1000).toFixed(1) + " s");
const ago = (iso) => (iso ? ms(Date.now() - Date.parse(iso)) + " ago" : "never");
const dur = (s) => {
  s = Math.floor(s);
  const d = Math.floor(s / 86400), h = Math.floor(s / 3600) % 24, m = Math.floor(s / 60) % 60;
  return d ? d + "d " + h + "h" : h ? h + "h " + m + "m" : m ? m + "m " + (s % 60) + "s" : s + "s";
};
const badge = (text) => el("span", text, "badge " + text);

function rows(id, items, cells, empty) {
  const body = $(id);
  const out = [];
  for (const item of items) {
    const tr = el("tr");
    for (const c of cells(item)) {
      const td = el("td", null, c.n ? "n" : "");
      if (c.node) td.append(c.node); else td.textContent = c.t === undefined || c.t === null ? "–" : String(c.t);
      tr.append(td);
    }
    if (item.job_id) tr.dataset.jobId = item.job_id;
    out.push(tr);
  }
  if (out.length === 0) {
    const tr = el("tr");
    const td = el("td", empty, "dim");
    td.colSpan = $(id).parentElement.querySelectorAll("th").length;
    tr.append(td);
    out.push(tr);
  }
  body.replaceChildren(...out);
}

function card(label, value, id) {
  const c = el("div", null, "card");
  c.append(el("div", label, "dim"));
  const v = el("div", value, "v");
  if (id) v.id = id;
  c.append(v);
  return c;
}

function draw(s) {
  const co = s.coordinator;
  $("title").textContent = "usepod-agent " + s.version;
  $("state").replaceChildren(badge(co.state));
  $("sub").textContent = "pid " + s.pid + " · up " + dur(s.uptime_s) + " · provider_id " +
    (s.provider_id ?? "not enrolled") + " · public key " + s.public_key;
  const conn = [co.url, "since " + ago(co.state_since), "last auth " + ago(co.last_auth_at),
    num(co.reconnects) + " reconnects"];
  if (co.next_retry_at) conn.push("next retry in " + ms(Math.max(0, Date.parse(co.next_retry_at) - Date.now())));
  if (co.last_error) conn.push("last error: " + co.last_error);
  $("conn").textContent = conn.join(" · ");
  const k = s.counters;
  $("cards").replaceChildren(
    card("jobs in flight", num(s.limits.in_flight) + " / " + num(s.limits.max_concurrent), "in-flight"),
    card("jobs done", num(k.job_done)),
    card("errors", num(k.errors)),
    card("refused", num(k.refused)),
    card("tokens in / out", num(k.input_tokens) + " / " + num(k.output_tokens), "tokens"),
    card("earned (USDC)", usdc(k.earned_micro_usdc), "earned"),
  );
  const e = s.earnings;
  const periods = e ? [["today (UTC)", e.today], ["7 days", e.last_7d], ["since start", e.since_start]] : [];
  rows("money", periods, ([label, p]) => [
    { t: label }, { t: num(p.jobs), n: true }, { t: num(p.input_tokens) + " / " + num(p.output_tokens), n: true },
    { t: p.earned_usdc, n: true }, { t: p.missed_usdc, n: true }, { t: num(p.missed_jobs), n: true },
    { t: p.top_missed_reason },
  ], "no earnings reported by this agent");
  rows("backends", s.backends, (b) => [
    { t: b.kind }, { t: b.url }, { node: badge(b.health) }, { t: ms(b.latency_ms), n: true },
    { t: b.slots_in_use + " / " + (b.slots ?? "?") +
      (b.queue_waiting ? " +" + b.queue_waiting + " queued" : ""), n: true },
    { t: b.models.join(", ") }, { t: b.last_error },
  ], "no backend configured");
  rows("models", s.models, (m) => [
    { t: m.model_id }, { t: m.backend }, { t: perM(m.input_per_1m), n: true },
    { t: perM(m.output_per_1m), n: true }, { t: m.slots_in_use + " / " + m.max_concurrent, n: true },
    { t: m.context_window === null ? null : num(m.context_window), n: true },
    { t: m.paused ? "paused" : "serving" },
  ], "no model advertised");
  rows("jobs", s.jobs_in_flight, (j) => [
    { t: j.job_id }, { t: j.model }, { t: j.backend }, { t: ms(j.age_ms), n: true },
    { t: num(j.bytes), n: true }, { t: num(j.output_tokens), n: true }, { t: ms(j.first_chunk_ms), n: true },
  ], "no job in flight");
  rows("recent", s.recent_jobs, (j) => [
    { t: new Date(j.finished_at).toLocaleTimeString() }, { t: j.job_id }, { t: j.model },
    { node: el("span", j.outcome, j.outcome === "job_done" ? "" : "dim") },
    { t: num(j.input_tokens), n: true }, { t: num(j.output_tokens), n: true },
    { t: ms(j.duration_ms), n: true }, { t: ms(j.first_chunk_ms), n: true },
  ], "no job finished yet");
  const billed = k.by_model.filter((m) => m.billed_input_tokens + m.billed_output_tokens > 0);
  rows("earnings", billed, (m) => [
    { t: m.model }, { t: num(m.billed_input_tokens), n: true }, { t: num(m.billed_output_tokens), n: true },
    { t: perM(m.input_per_1m) + " / " + perM(m.output_per_1m), n: true }, { t: usdc(m.earned_micro_usdc), n: true },
  ], "nothing earned yet");
}

async function refresh() {
  try {
    const res = await fetch("/status", { cache: "no-store" });
    if (!res.ok) throw new Error("GET /status answered " + res.status);
    draw(await res.json());
    $("error").className = "";
    $("updated").textContent = "updated " + new Date().toLocaleTimeString();
  } catch (err) {
    $("error").textContent = "The agent does not answer: " + (err && err.message ? err.message : err);
    $("error").className = "shown";
  } finally {
    setTimeout(refresh, 2000);
  }
}
refresh();

async function refreshCharts() {
  try {
    const res = await fetch("/charts", { cache: "no-store" });
    if (res.ok) $("charts").outerHTML = await res.text();
  } catch {
    // the /status refresh reports an agent that does not answer
  } finally {
    setTimeout(refreshCharts, 15000);
  }
}
setTimeout(refreshCharts, 15000);
`;

const CHARTS_SLOT = "<!-- charts -->";

const BODY = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>usepod-agent status</title>
<style>${STYLE}</style>
</head>
<body>
<h1><span id="title">usepod-agent</span> <span id="state"></span></h1>
<div class="sub" id="sub">loading…</div>
<div class="sub" id="conn"></div>
<div id="error" role="alert"></div>
<div class="cards" id="cards"></div>
<h2>Money <span class="dim">(USDC at the advertised prices; missed: what refused or failed jobs would have brought)</span></h2>
<table><thead><tr><th>period</th><th class="n">jobs</th><th class="n">tokens in / out</th><th class="n">earned</th><th class="n">missed</th><th class="n">missed jobs</th><th>top missed reason</th></tr></thead><tbody id="money"></tbody></table>
<h2>History <span class="dim">(kept across restarts; hover for values)</span></h2>
${CHARTS_SLOT}
<h2>Backends</h2>
<table><thead><tr><th>kind</th><th>url</th><th>health</th><th class="n">latency</th><th class="n">slots in use</th><th>models</th><th>last error</th></tr></thead><tbody id="backends"></tbody></table>
<h2>Models <span class="dim">(prices in USDC per million tokens)</span></h2>
<table><thead><tr><th>model</th><th>backend</th><th class="n">input</th><th class="n">output</th><th class="n">slots</th><th class="n">context</th><th>state</th></tr></thead><tbody id="models"></tbody></table>
<h2>Jobs in flight</h2>
<table><thead><tr><th>job</th><th>model</th><th>backend</th><th class="n">age</th><th class="n">bytes</th><th class="n">tokens</th><th class="n">first chunk</th></tr></thead><tbody id="jobs"></tbody></table>
<h2>Recent jobs</h2>
<table><thead><tr><th>finished</th><th>job</th><th>model</th><th>outcome</th><th class="n">in</th><th class="n">out</th><th class="n">duration</th><th class="n">first chunk</th></tr></thead><tbody id="recent"></tbody></table>
<h2>Tokens served and earned <span class="dim">(job_done tokens at the advertised prices)</span></h2>
<table><thead><tr><th>model</th><th class="n">input tokens</th><th class="n">output tokens</th><th class="n">price in / out</th><th class="n">earned (USDC)</th></tr></thead><tbody id="earnings"></tbody></table>
<p class="dim" id="updated"></p>
<script>${SCRIPT}</script>
</body>
</html>
`;

async function hash(text: string): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text));
  return `'sha256-${new Uint8Array(digest).toBase64()}'`;
}

export { chartsSection } from "./charts.ts";

/**
 * The page (with the charts section given, see {@link chartsSection}) and its
 * Content-Security-Policy, which allows exactly its own inline script and style (by hash) and
 * fetches to its own origin.
 *
 * @example
 * ```ts
 * const { html, csp } = await statusPage();
 * const page = html(chartsSection(agent.history.series()));
 * return new Response(page, { headers: { "content-security-policy": csp } });
 * ```
 */
export async function statusPage(): Promise<{ html: (charts: string) => string; csp: string }> {
  const [script, style] = await Promise.all([hash(SCRIPT), hash(STYLE)]);
  const csp = [
    "default-src 'none'",
    `script-src ${script}`,
    `style-src ${style}`,
    "connect-src 'self'",
    "img-src 'none'",
    "base-uri 'none'",
    "form-action 'none'",
    "frame-ancestors 'none'",
  ].join("; ");
  const [head, tail] = BODY.split(CHARTS_SLOT) as [string, string];
  return { html: (charts) => head + charts + tail, csp };
}
