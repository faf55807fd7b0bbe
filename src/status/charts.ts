// The status page's charts (issue 15), drawn on the server as inline SVG so they read without
// JavaScript: USDC earned per hour over the last 24 h (bars) and output tokens per second over
// the last hour (a line with a marker per minute). Styled by classes of the page's own CSS.

import type { HistorySeries, Point } from "../books/history.ts";

const W = 560;
const H = 160;
const PAD = { left: 64, right: 8, top: 10, bottom: 22 };

function esc(s: string): string {
  return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(
    /"/g,
    "&quot;",
  );
}

/** A readable number: up to `digits` significant decimals, no exponent. */
function fmt(v: number, digits: number): string {
  if (v === 0) return "0";
  const s = v.toFixed(digits);
  return s.includes(".") ? s.replace(/0+$/, "").replace(/\.$/, "") : s;
}

/** The time of a bucket as HH:MM UTC. */
function hhmm(t: number): string {
  return new Date(t).toISOString().slice(11, 16);
}

function frame(
  id: string,
  label: string,
  points: readonly Point[],
  max: number,
  unit: string,
  digits: number,
  body: string,
): string {
  const x0 = PAD.left;
  const y0 = H - PAD.bottom;
  const first = points[0];
  const last = points[points.length - 1];
  return `<svg id="${id}" class="chart" role="img" aria-label="${esc(label)}" ` +
    `viewBox="0 0 ${W} ${H}" width="${W}" height="${H}" xmlns="http://www.w3.org/2000/svg">` +
    `<title>${esc(label)}</title>` +
    `<line class="axis" x1="${x0}" y1="${PAD.top}" x2="${x0}" y2="${y0}"/>` +
    `<line class="axis" x1="${x0}" y1="${y0}" x2="${W - PAD.right}" y2="${y0}"/>` +
    `<text class="tick" x="${x0 - 4}" y="${PAD.top + 8}" text-anchor="end">` +
    `${fmt(max, digits)}</text>` +
    `<text class="tick" x="${x0 - 4}" y="${y0}" text-anchor="end">0</text>` +
    `<text class="tick" x="${x0 - 4}" y="${(PAD.top + y0) / 2 + 4}" text-anchor="end">` +
    `${esc(unit)}</text>` +
    (first
      ? `<text class="tick" x="${x0}" y="${H - 6}">${hhmm(first.t)} UTC</text>` +
        `<text class="tick" x="${W - PAD.right}" y="${H - 6}" text-anchor="end">` +
        `${last ? "now" : ""}</text>`
      : "") +
    body +
    `</svg>`;
}

/** Rounds a maximum up to a tidy scale top (1, 2 or 5 times a power of ten); 1 for nothing. */
function scaleTop(max: number): number {
  if (!(max > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(max));
  for (const m of [1, 2, 5, 10]) if (max <= m * p) return m * p;
  return 10 * p;
}

/**
 * A bar per bucket, each with its value in `data-v` and a tooltip.
 *
 * @example
 * ```ts
 * barChart("chart-earnings", "USDC earned per hour", series.earningsPerHour, "USDC/h", 6);
 * ```
 */
export function barChart(
  id: string,
  label: string,
  points: readonly Point[],
  unit: string,
  digits: number,
): string {
  const top = scaleTop(Math.max(0, ...points.map((p) => p.v)));
  const plotW = W - PAD.left - PAD.right;
  const plotH = H - PAD.top - PAD.bottom;
  const step = plotW / Math.max(1, points.length);
  const bars = points.map((p, i) => {
    const h = (p.v / top) * plotH;
    const x = PAD.left + i * step + 1;
    const y = H - PAD.bottom - h;
    return `<rect class="bar" x="${x.toFixed(1)}" y="${y.toFixed(1)}" ` +
      `width="${Math.max(1, step - 2).toFixed(1)}" height="${h.toFixed(1)}" ` +
      `data-t="${new Date(p.t).toISOString()}" data-v="${p.v}">` +
      `<title>${hhmm(p.t)} UTC: ${fmt(p.v, digits)} ${esc(unit)}</title></rect>`;
  }).join("");
  return frame(id, label, points, top, unit, digits, bars);
}

/**
 * A line through the buckets with a marker per bucket (value in `data-v`, a tooltip each).
 *
 * @example
 * ```ts
 * lineChart("chart-tokens", "output tokens per second", series.tokensPerSecond, "tok/s", 1);
 * ```
 */
export function lineChart(
  id: string,
  label: string,
  points: readonly Point[],
  unit: string,
  digits: number,
): string {
  const top = scaleTop(Math.max(0, ...points.map((p) => p.v)));
  const plotW = W - PAD.left - PAD.right;
  const plotH = H - PAD.top - PAD.bottom;
  const step = plotW / Math.max(1, points.length - 1);
  const xy = points.map((p, i) =>
    [PAD.left + i * step, H - PAD.bottom - (p.v / top) * plotH] as const
  );
  const line = `<polyline class="line" fill="none" points="${
    xy.map(([x, y]) => `${x.toFixed(1)},${y.toFixed(1)}`).join(" ")
  }"/>`;
  const dots = points.map((p, i) =>
    `<circle class="dot" cx="${xy[i]![0].toFixed(1)}" cy="${xy[i]![1].toFixed(1)}" r="2" ` +
    `data-t="${new Date(p.t).toISOString()}" data-v="${p.v}">` +
    `<title>${hhmm(p.t)} UTC: ${fmt(p.v, digits)} ${esc(unit)}</title></circle>`
  ).join("");
  return frame(id, label, points, top, unit, digits, line + dots);
}

/**
 * The charts section of the status page for a history (or a note when the agent keeps none).
 *
 * @example
 * ```ts
 * const html = chartsSection(agent.history.series());
 * ```
 */
export function chartsSection(series: HistorySeries | undefined): string {
  if (!series) return `<div id="charts"><p class="dim">no history kept by this agent</p></div>`;
  const earned = series.earningsPerHour.reduce((n, p) => n + p.v, 0);
  const tokens = series.tokensPerSecond;
  const peak = Math.max(0, ...tokens.map((p) => p.v));
  return `<div id="charts" class="charts">` +
    `<figure><figcaption>Earned per hour, last 24 h ` +
    `<span class="dim">(${fmt(earned, 6)} USDC in all)</span></figcaption>` +
    barChart(
      "chart-earnings",
      "USDC earned per hour, last 24 hours",
      series.earningsPerHour,
      "USDC/h",
      6,
    ) +
    `</figure>` +
    `<figure><figcaption>Output tokens per second, last hour ` +
    `<span class="dim">(peak ${fmt(peak, 1)} tok/s, mean of a minute)</span></figcaption>` +
    lineChart("chart-tokens", "output tokens per second, last hour", tokens, "tok/s", 1) +
    `</figure></div>`;
}
