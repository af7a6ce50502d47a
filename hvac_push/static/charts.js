/* Trend charts on canvases, drawn by hand (no chart library): the sparklines of
 * rows and chips, and the large chart of one point with its axes and statistics.
 * Only charts in (or near) the viewport are drawn, at most once per animation
 * frame, from the series in state.js.
 */

import { formatClock, formatNumber } from './format.js';
import { isFlag, splitId } from './points.js';
import { limitsOf } from './plant.js';
import { mirror } from './state.js';
import { rangeSeconds, rangeSeries } from './ranges.js';
import { terms } from './terms.js';
import { displayNumber, displayUnit } from './units.js';

const SPARK_WINDOW_S = 10 * 60;   // what a card's sparkline shows
const MIN_SPAN_S = 5;             // the shortest time span a chart is stretched to
const TIME_STEPS = [1, 2, 5, 10, 15, 30, 60, 120, 180, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400];

const sparks = new Map();         // point id -> its sparkline's canvas
const dirty = new Set();          // point ids whose chart needs a redraw
const onScreen = new Set();       // charts in (or near) the viewport: only they are drawn
const detail = { id: null, canvas: null, stats: null, forced: false };
const trends = new Map();         // point id -> {id, canvas, stats}: the unit page's large charts
let frameQueued = false;
let visibilityListener = () => {};

const watcher = typeof IntersectionObserver === 'function' ? new IntersectionObserver((entries) => {
  entries.forEach((entry) => {
    const id = entry.target.dataset.point;
    if (entry.isIntersecting) {
      onScreen.add(id);
      markDirty(id);
    } else {
      onScreen.delete(id);
    }
  });
  visibilityListener();
}, { rootMargin: '200px' }) : null;

/** C{listener()} runs when charts scroll into or out of view. */
export function onVisibilityChange(listener) { visibilityListener = listener; }

/** Draw C{canvas} as the sparkline of C{id} whenever C{element} is in view. */
export function track(id, element, canvas) {
  sparks.set(id, canvas);
  if (watcher) watcher.observe(element);
  else onScreen.add(id);
}

export function untrack(id, element) {
  if (sparks.has(id) && watcher) watcher.unobserve(element);
  sparks.delete(id);
  onScreen.delete(id);
}

export function isOnScreen(id) { return onScreen.has(id); }

/** The point the large chart shows (null when closed). */
export function detailPoint() { return detail.id; }

export function showDetailChart(id, canvas, stats) {
  detail.id = id;
  detail.canvas = canvas;
  detail.stats = stats;
  redrawDetail();
}

export function hideDetailChart() { detail.id = null; }

/** Draw C{canvas} as the large trend of C{id} (with its setpoint and limits), C{stats} under it. */
export function trackTrend(id, canvas, stats) {
  trends.set(id, { id, canvas, stats });
  markDirty(id);
}

/** Stop drawing every unit-page trend (the page was left). */
export function untrackTrends() { trends.clear(); }

export function redrawDetail() {
  detail.forced = true;
  queueFrame();
}

export function markDirty(id) {
  dirty.add(id);
  queueFrame();
}

export function markAllDirty() {
  sparks.forEach((_, id) => dirty.add(id));
  trends.forEach((_, id) => dirty.add(id));
  queueFrame();
}

function queueFrame() {
  if (frameQueued) return;
  frameQueued = true;
  window.requestAnimationFrame(drawFrame);
}

function drawFrame() {
  frameQueued = false;
  dirty.forEach((id) => {
    const canvas = sparks.get(id);
    if (canvas && onScreen.has(id)) drawSpark(canvas, id);
  });
  if (detail.id && (dirty.has(detail.id) || detail.forced)) drawLarge(detail);
  trends.forEach((t) => { if (dirty.has(t.id) || detail.forced) drawLarge(t); });
  detail.forced = false;
  dirty.clear();
}

// -- drawing --------------------------------------------------------------------

function css(name) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
}

let palette = null;
function colours() {
  if (!palette) {
    palette = {
      line: css('--chart-line') || '#4cc2ff',
      fill: css('--chart-fill') || 'rgba(76,194,255,0.15)',
      stale: css('--stale') || '#d29922',
      fault: css('--fault') || '#f85149',
      grid: css('--chart-grid') || 'rgba(255,255,255,0.08)',
      text: css('--muted') || '#8b98a5',
      on: css('--on') || '#4cc2ff',
      flag: css('--major') || '#ff9a1f',
      limit: css('--limit-line') || '#ff7b72',
      setpoint: css('--setpoint-line') || '#7ee787'
    };
  }
  return palette;
}

/** Size the canvas backing store to its CSS box at the device pixel ratio; return a 2D context in CSS pixels. */
function prepare(canvas) {
  const w = canvas.clientWidth;
  const h = canvas.clientHeight;
  if (!w || !h) return null;
  const ratio = window.devicePixelRatio || 1;
  const bw = Math.round(w * ratio);
  const bh = Math.round(h * ratio);
  if (canvas.width !== bw || canvas.height !== bh) {
    canvas.width = bw;
    canvas.height = bh;
  }
  const ctx = canvas.getContext('2d');
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, w, h);
  return { ctx, w, h };
}

function visible(series, t0) {
  // Keep one sample before the window so the line enters from the left edge.
  let i = series.length;
  while (i > 0 && series[i - 1][0] >= t0) i--;
  return series.slice(Math.max(0, i - 1));
}

function valueRange(samples, unit) {
  let lo = Infinity;
  let hi = -Infinity;
  samples.forEach((x) => {
    const v = displayNumber(x[1], unit);
    if (v < lo) lo = v;
    if (v > hi) hi = v;
  });
  const span = hi - lo;
  const pad = span > 0 ? span * 0.12 : Math.max(Math.abs(hi) * 0.02, 0.5);
  return { lo: lo - pad, hi: hi + pad };
}

function lineColour(id) {
  const p = mirror.points.get(id);
  const c = colours();
  if (p && p.status === 'fault') return c.fault;
  if (p && p.status === 'stale') return c.stale;
  if (isFlag(splitId(id).point)) return c.flag;
  return c.line;
}

/** Plot a series into a box: a line with a soft fill for numbers, filled runs for on/off. */
function plot(ctx, samples, unit, box, t0, t1, range, colour, fill) {
  const x = (t) => box.x + (t - t0) / (t1 - t0) * box.w;
  const last = samples[samples.length - 1];
  if (typeof last[1] === 'boolean') {
    ctx.fillStyle = colour;
    ctx.globalAlpha = 0.55;
    // One rectangle per run of "on", from where it switched on to where it switched off.
    let runStart = null;
    for (let i = 0; i <= samples.length; i++) {
      const on = i < samples.length && samples[i][1] === true;
      if (on && runStart === null) runStart = samples[i][0];
      if (!on && runStart !== null) {
        const a = Math.max(box.x, x(runStart));
        const b = i < samples.length ? x(samples[i][0]) : box.x + box.w;
        if (b > a) ctx.fillRect(Math.round(a), Math.round(box.y + box.h * 0.2), Math.max(1, Math.round(b - a)), Math.round(box.h * 0.6));
        runStart = null;
      }
    }
    ctx.globalAlpha = 0.35;
    ctx.fillRect(box.x, Math.round(box.y + box.h * 0.8), box.w, 1);  // the "off" baseline
    ctx.globalAlpha = 1;
    return;
  }
  const nums = samples.filter((s) => typeof s[1] === 'number');
  if (!nums.length) return;
  const y = (v) => box.y + box.h - (displayNumber(v, unit) - range.lo) / (range.hi - range.lo) * box.h;
  const right = box.x + box.w;
  ctx.beginPath();
  nums.forEach((s, i) => {
    const px = Math.max(box.x, x(s[0]));
    if (i === 0) ctx.moveTo(px, y(s[1]));
    else ctx.lineTo(px, y(s[1]));
  });
  const lastY = y(nums[nums.length - 1][1]);
  ctx.lineTo(right, lastY);  // the value holds until now
  ctx.strokeStyle = colour;
  ctx.lineWidth = 1.6;
  ctx.lineJoin = 'round';
  ctx.stroke();
  if (fill && nums.length > 1) {
    ctx.lineTo(right, box.y + box.h);
    ctx.lineTo(Math.max(box.x, x(nums[0][0])), box.y + box.h);
    ctx.closePath();
    ctx.fillStyle = fill;
    ctx.fill();
  }
  ctx.fillStyle = colour;
  ctx.beginPath();
  ctx.arc(Math.min(right - 2, x(nums[nums.length - 1][0])), lastY, 2.2, 0, Math.PI * 2);
  ctx.fill();
}

/** The time span to draw: up to C{window} seconds back from now, but no further
 * back than the oldest sample, so a young series fills the chart at once. */
function timeRange(series, window) {
  const now = Date.now() / 1000;
  const t1 = series.length ? Math.max(now, series[series.length - 1][0]) : now;
  const oldest = series.length ? series[0][0] : t1;
  const t0 = Math.max(t1 - window, Math.min(oldest, t1 - MIN_SPAN_S));
  return { t0, t1 };
}

/** What a chart of C{id} draws: the selected long range (ranges.js), or the live window. */
function seriesOf(id) {
  return rangeSeries(id) || mirror.series.get(id) || [];
}

function drawSpark(canvas, id) {
  const g = prepare(canvas);
  if (!g) return;
  const series = seriesOf(id);
  const p = mirror.points.get(id);
  if (!p || !series.length) return;
  const span = timeRange(series, rangeSeconds() || Math.min(SPARK_WINDOW_S, terms.history_window));
  const samples = visible(series, span.t0);
  if (!samples.length) return;
  const box = { x: 1, y: 3, w: g.w - 4, h: g.h - 6 };
  const nums = samples.filter((s) => typeof s[1] === 'number');
  const range = nums.length ? valueRange(nums, p.unit) : null;
  const colour = lineColour(id);
  plot(g.ctx, samples, p.unit, box, span.t0, span.t1, range, colour, colour === colours().line ? colours().fill : null);
}

function spanLabel(seconds) {
  if (seconds >= 2 * 86400 - 60) return 'last ' + Math.round(seconds / 86400) + ' d';
  if (seconds >= 2 * 3600 - 60) return 'last ' + Math.round(seconds / 3600) + ' h';
  return seconds >= 90 ? 'last ' + Math.round(seconds / 60) + ' min' : 'last ' + Math.round(seconds) + ' s';
}

/** A time axis label: the clock, or the day for day-long ticks. */
function tickLabel(t, step) {
  if (step >= 86400) return new Date(t * 1000).toLocaleDateString([], { weekday: 'short', day: 'numeric' });
  return step < 60 ? formatClock(t) : formatClock(t).slice(0, 5);
}

function niceStep(span, count) {
  const raw = span / Math.max(1, count);
  const mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const norm = raw / mag;
  const step = norm < 1.5 ? 1 : norm < 3 ? 2 : norm < 7 ? 5 : 10;
  return step * mag;
}

/**
 * The lines drawn across a large chart of C{id}: the alarm limits the server
 * uses for it (plant.json), and for a supply temperature its unit's setpoint.
 */
function referenceLines(id) {
  const lines = [];
  const limits = limitsOf(id);
  if (limits && typeof limits.high === 'number') lines.push({ value: limits.high, label: 'high limit', kind: 'limit' });
  if (limits && typeof limits.low === 'number') lines.push({ value: limits.low, label: 'low limit', kind: 'limit' });
  const parts = splitId(id);
  if (parts.point === 'supply_temp') {
    const sp = mirror.points.get(parts.site + '/' + parts.unit + '/setpoint');
    if (sp && typeof sp.value === 'number') lines.push({ value: sp.value, label: 'setpoint', kind: 'setpoint' });
  }
  return lines;
}

/** The large chart: time and value axes, the series, setpoint and limit lines, and min/mean/max under it. */
function drawLarge(target) {
  const id = target.id;
  const p = mirror.points.get(id);
  const g = prepare(target.canvas);
  if (!g || !p) return;
  const ctx = g.ctx;
  const c = colours();
  const series = seriesOf(id);
  const { t0, t1 } = timeRange(series, rangeSeconds() || terms.history_window);
  const samples = visible(series, t0);
  ctx.font = '12px system-ui, sans-serif';
  const lines = typeof samples[samples.length - 1]?.[1] === 'number' ? referenceLines(id) : [];
  // Room for the widest value label on the left and the setpoint/limit names on the right: nothing is clipped.
  const nums0 = samples.filter((s) => typeof s[1] === 'number');
  const range0 = nums0.length ? valueRange(nums0.concat(lines.map((l) => [0, l.value])), p.unit) : null;
  const left = range0 ? Math.ceil(Math.max(ctx.measureText(formatNumber(range0.lo)).width,
    ctx.measureText(formatNumber(range0.hi)).width)) + 16 : 16;
  const right = lines.length ? Math.ceil(Math.max(...lines.map((l) => ctx.measureText(l.label).width))) + 12 : 14;
  const box = { x: left, y: 10, w: g.w - left - right, h: g.h - 36 };
  ctx.fillStyle = c.text;
  ctx.strokeStyle = c.grid;
  ctx.lineWidth = 1;

  // Time axis: about six ticks at round times.
  // About six ticks at round times, fewer when the chart is too narrow for their labels to stand apart.
  const fit = Math.max(2, Math.floor(box.w / (ctx.measureText('00:00:00').width + 14)));
  const tickS = TIME_STEPS.filter((step) => (t1 - t0) / step <= Math.min(7, fit))[0] || 86400;
  ctx.textAlign = 'center';
  ctx.textBaseline = 'top';
  for (let t = Math.ceil(t0 / tickS) * tickS; t <= t1; t += tickS) {
    const tx = box.x + (t - t0) / (t1 - t0) * box.w;
    ctx.beginPath();
    ctx.moveTo(Math.round(tx) + 0.5, box.y);
    ctx.lineTo(Math.round(tx) + 0.5, box.y + box.h);
    ctx.stroke();
    const label = tickLabel(t, tickS);
    const half = ctx.measureText(label).width / 2;
    if (tx - half >= 0 && tx + half <= g.w) ctx.fillText(label, tx, box.y + box.h + 6);
  }

  const stats = target.stats;
  if (!samples.length) {
    ctx.textAlign = 'center';
    ctx.textBaseline = 'middle';
    ctx.fillText('No samples yet', box.x + box.w / 2, box.y + box.h / 2);
    stats.textContent = '';
    return;
  }
  const nums = samples.filter((s) => typeof s[1] === 'number');
  let range = null;
  if (nums.length && typeof samples[samples.length - 1][1] === 'number') {
    range = range0;
    const step = niceStep(range.hi - range.lo, 5);
    const decimals = Math.max(0, Math.min(4, -Math.floor(Math.log10(step) + 1e-9)));
    ctx.textAlign = 'right';
    ctx.textBaseline = 'middle';
    for (let v = Math.ceil(range.lo / step) * step; v <= range.hi; v += step) {
      const vy = box.y + box.h - (v - range.lo) / (range.hi - range.lo) * box.h;
      ctx.beginPath();
      ctx.moveTo(box.x, Math.round(vy) + 0.5);
      ctx.lineTo(box.x + box.w, Math.round(vy) + 0.5);
      ctx.stroke();
      ctx.fillText(v.toFixed(decimals), box.x - 8, vy);
    }
    const inWindow = nums.filter((s) => s[0] >= t0);
    const vals = (inWindow.length ? inWindow : nums).map((s) => displayNumber(s[1], p.unit));
    const min = Math.min.apply(null, vals);
    const max = Math.max.apply(null, vals);
    const mean = vals.reduce((a, b) => a + b, 0) / vals.length;
    const u = displayUnit(p.unit);
    stats.textContent = spanLabel(t1 - t0) + ' \u00b7 min ' + formatNumber(min) + ' ' + u + ' \u00b7 mean ' +
      formatNumber(mean) + ' ' + u + ' \u00b7 max ' + formatNumber(max) + ' ' + u + ' \u00b7 ' + vals.length + ' samples';
  } else {
    const on = samples.filter((s) => s[1] === true).length;
    stats.textContent = spanLabel(t1 - t0) + ' \u00b7 ' + samples.length + ' samples \u00b7 on in ' + on;
  }
  ctx.save();
  ctx.beginPath();
  ctx.rect(box.x, box.y - 4, box.w + 4, box.h + 8);
  ctx.clip();
  const colour = lineColour(id);
  plot(ctx, samples, p.unit, box, t0, t1, range, colour, colour === c.line ? c.fill : null);
  ctx.restore();
  // Setpoint (solid) and limits (dashed), named at the right edge: the name says what each line is.
  if (range) {
    ctx.textAlign = 'left';
    ctx.textBaseline = 'middle';
    lines.forEach((l) => {
      const vy = box.y + box.h - (displayNumber(l.value, p.unit) - range.lo) / (range.hi - range.lo) * box.h;
      ctx.strokeStyle = l.kind === 'limit' ? c.limit : c.setpoint;
      ctx.setLineDash(l.kind === 'limit' ? [6, 4] : []);
      ctx.lineWidth = 1.2;
      ctx.beginPath();
      ctx.moveTo(box.x, Math.round(vy) + 0.5);
      ctx.lineTo(box.x + box.w, Math.round(vy) + 0.5);
      ctx.stroke();
      ctx.setLineDash([]);
      ctx.fillStyle = ctx.strokeStyle;
      ctx.fillText(l.label, box.x + box.w + 4, vy);
    });
    target.canvas.dataset.lines = lines.map((l) => l.kind + ':' + l.value).join(',');
  }
}
