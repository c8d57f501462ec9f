// Summary cards (with the change against the previous period) and the time-series charts
// (uPlot) of one time range.

import uPlot from './vendor/uPlot.esm.js';
import { get } from './api.js';
import { el, clear, fmt } from './dom.js';

const $ = (id) => document.getElementById(id);
let charts = [];
let generation = 0;

// CARDS: label, value of a period's metrics, formatter, and whether up is good.
const CARDS = [
  { label: 'Requests', value: (m) => m.requests, fmt: fmt.int, good: 'neutral' },
  { label: 'Error rate', value: (m) => m.error_rate, fmt: fmt.pct, good: 'down', sub: (m) => fmt.int(m.errors) + ' errors' },
  { label: 'Tokens in', value: (m) => m.prompt_tokens, fmt: fmt.int, good: 'neutral', sub: (m) => fmt.int(m.cached_tokens) + ' cached' },
  { label: 'Tokens out', value: (m) => m.completion_tokens, fmt: fmt.int, good: 'neutral', sub: (m) => fmt.int(m.reasoning_tokens) + ' reasoning' },
  { label: 'Cost', value: (m) => (m.unpriced_requests < m.requests ? m.cost_micro_usd : null), fmt: fmt.usd, good: 'down', sub: (m) => fmt.int(m.unpriced_requests) + ' unpriced', unpriced: true },
  { label: 'Latency avg', value: (m) => m.latency_avg_us, fmt: fmt.ms, good: 'down', sub: (m) => 'p95 ' + approx(m) + fmt.ms(m.latency_p95_us) },
  { label: 'TTFB p95', value: (m) => m.ttfb_p95_us, fmt: fmt.ms, good: 'down', sub: (m) => 'avg ' + fmt.ms(m.ttfb_avg_us), pct: true },
  { label: 'Overhead avg', value: (m) => m.overhead_avg_us, fmt: fmt.ms, good: 'down' },
];

// CHARTS: title, unit and the series drawn from each point.
const CHARTS = [
  { title: 'Requests', unit: '', series: [
    { label: 'ok', stroke: '#2f7d4f', value: (p) => p.requests - p.errors },
    { label: 'error', stroke: '#c0392b', value: (p) => p.errors },
  ] },
  { title: 'Tokens', unit: '', series: [
    { label: 'in', stroke: '#3465a4', value: (p) => p.prompt_tokens },
    { label: 'out', stroke: '#b5651d', value: (p) => p.completion_tokens },
  ] },
  { title: 'Cost (USD)', unit: '$', series: [
    { label: 'cost', stroke: '#7b4fa0', value: (p) => p.cost_micro_usd / 1e6 },
  ] },
  { title: 'Latency (ms)', unit: 'ms', gaps: true, series: [
    { label: 'avg', stroke: '#3465a4', value: (p) => ms(p.latency_avg_us) },
    { label: 'p95', stroke: '#c0392b', value: (p) => ms(p.latency_p95_us) },
  ] },
  { title: 'TTFB p95 (ms)', unit: 'ms', gaps: true, series: [
    { label: 'p95', stroke: '#b5651d', value: (p) => ms(p.ttfb_p95_us) },
  ] },
];

// approx marks a percentile read from the rollups' histograms (within 4.4 %, see the README).
const approx = (m) => (m.percentiles_approximate ? '≈ ' : '');

const ms = (us) => (us === null || us === undefined ? null : us / 1000);

// renderOverview loads and draws the cards and charts of range.
export async function renderOverview(range) {
  const gen = ++generation;
  const params = { from: range.from, to: range.to };
  const [summary, series] = await Promise.all([
    get('/v1/analytics/summary', params),
    get('/v1/analytics/timeseries', { ...params, bucket: range.bucket }),
  ]);
  if (gen !== generation) return; // a newer range was asked for meanwhile
  renderCards(summary);
  renderCharts(series);
}

// clearOverview removes every figure (on sign-out).
export function clearOverview() {
  generation++;
  for (const c of charts) c.destroy();
  charts = [];
  clear($('cards'));
  clear($('charts'));
}

function renderCards({ current, previous }) {
  const box = clear($('cards'));
  for (const c of CARDS) {
    const cur = current.requests ? c.value(current) : null;
    const prev = previous.requests ? c.value(previous) : null;
    box.append(el('div', { class: 'card', 'data-card': c.label },
      el('div', { class: 'card-label' }, c.label),
      el('div', { class: 'card-value', title: c.pct && current.percentiles_approximate ? 'approximate: within 4.4 %' : null }, (c.pct && cur !== null ? approx(current) : '') + c.fmt(cur)),
      c.sub ? el('div', { class: 'card-sub' + (c.unpriced && current.unpriced_requests ? ' warn' : '') }, current.requests ? c.sub(current) : '—') : null,
      change(cur, prev, c.good)));
  }
}

// change is the card line comparing with the previous period: "—" without figures on
// both sides.
function change(cur, prev, good) {
  if (cur === null || prev === null || cur === undefined || prev === undefined || prev === 0) {
    return el('div', { class: 'card-change' }, '— vs previous');
  }
  const r = (cur - prev) / Math.abs(prev);
  const dir = r > 0.0005 ? 'up' : r < -0.0005 ? 'down' : 'flat';
  const arrow = { up: '▲', down: '▼', flat: '●' }[dir];
  const tone = good === 'neutral' || dir === 'flat' ? '' : dir === good ? ' good' : ' bad';
  const pct = Math.abs(r * 100);
  return el('div', { class: 'card-change' + tone, title: 'previous period: ' + prev },
    `${arrow} ${pct >= 100 ? pct.toFixed(0) : pct.toFixed(1)} % vs previous`);
}

function renderCharts(series) {
  for (const c of charts) c.destroy();
  charts = [];
  const box = clear($('charts'));
  const xs = series.points.map((p) => Date.parse(p.start) / 1000);
  for (const spec of CHARTS) {
    const holder = el('div', { class: 'chart-plot' });
    box.append(el('figure', { class: 'chart', 'data-chart': spec.title },
      el('figcaption', null, spec.title), holder));
    const data = [xs, ...spec.series.map((s) => series.points.map(s.value))];
    const opts = {
      width: chartWidth(holder),
      height: 180,
      legend: { live: true },
      cursor: { focus: { prox: 16 } },
      scales: { x: { time: true }, y: { range: (u, min, max) => [0, max > 0 ? max * 1.1 : 1] } },
      axes: [{}, { size: 60, values: (u, ticks) => ticks.map((t) => axisValue(t, spec.unit)) }],
      series: [{ label: 'time' }, ...spec.series.map((s) => ({
        label: s.label, stroke: s.stroke, width: 2, spanGaps: false,
        points: { show: spec.gaps || series.points.length <= 60, size: 5 }, // a lone bucket between gaps is a point
        value: (u, v) => (v === null || v === undefined ? '—' : axisValue(v, spec.unit, true)),
      }))],
    };
    charts.push(new uPlot(opts, data, holder));
  }
}

function axisValue(v, unit, exact) {
  if (unit === '$') return '$' + (exact ? v.toFixed(6) : +v.toPrecision(3));
  if (unit === 'ms') return (exact ? v.toFixed(2) : +v.toPrecision(3)) + (exact ? ' ms' : '');
  return exact ? Math.round(v).toLocaleString('en-US') : compact(v);
}

function compact(v) {
  if (Math.abs(v) >= 1e6) return +(v / 1e6).toPrecision(3) + 'M';
  if (Math.abs(v) >= 1e3) return +(v / 1e3).toPrecision(3) + 'k';
  return String(+v.toPrecision(3));
}

function chartWidth(holder) {
  const w = holder.parentElement ? holder.parentElement.clientWidth : 0;
  return Math.max(240, (w || 400) - 16);
}

let resizeTimer;
window.addEventListener('resize', () => {
  clearTimeout(resizeTimer);
  resizeTimer = setTimeout(() => {
    for (const c of charts) c.setSize({ width: chartWidth(c.root.parentElement), height: 180 });
  }, 100);
});
