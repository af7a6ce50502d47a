/* The trend charts' time range: 15 minutes (the live window, filled over the
 * WebSocket by history.js), or 24 hours and 7 days read from the store's HTTP API
 * (GET api/history, rolled up to one value per step). A server that keeps no store
 * answers 404 there: the longer ranges are then disabled, with a tooltip saying
 * why. The token, when the page has one, goes as an Authorization header.
 */

import { chartable } from './points.js';
import { currentToken } from './socket.js';
import { mirror } from './state.js';

export const RANGES = {
  '15m': { seconds: 15 * 60, step: null },
  '24h': { seconds: 24 * 3600, step: 300 },      // 288 values per point
  '7d': { seconds: 7 * 24 * 3600, step: 3600 }   // 168 values per point
};
const MAX_POINTS_PER_REQUEST = 100;   // the API's own cap
const REFRESH_MS = 60000;             // how often a long range is read again
const NO_STORE = 'This server keeps no history (it runs without a store): only the last 15 minutes are available';

const range = {
  key: '15m',
  available: null,      // null: not known yet; false: the server has no /api/history
  series: new Map(),    // id -> [[ts, value], ...] for the long range in view
  fetchedAt: 0,
  loading: false,
  generation: 0         // drops answers for a range no longer selected
};
let changed = () => {};
let wanted = () => [];

/** The selected range's key (15m, 24h, 7d). */
export function rangeKey() { return range.key; }

/** How far back the charts reach in the selected range (null: the live window). */
export function rangeSeconds() { return range.key === '15m' ? null : RANGES[range.key].seconds; }

/**
 * The samples to draw for C{id} in a long range: the store's, then the live ones
 * newer than its last value. Null in the live range (the charts use the mirror).
 */
export function rangeSeries(id) {
  if (range.key === '15m') return null;
  const stored = range.series.get(id) || [];
  const live = mirror.series.get(id) || [];
  const last = stored.length ? stored[stored.length - 1][0] : -Infinity;
  return stored.concat(live.filter((x) => x[0] > last));
}

function show() {
  const root = document.documentElement;
  root.dataset.range = range.key;
  root.dataset.rangeState = range.loading ? 'loading' : range.key === '15m' ? 'live' : (root.dataset.rangeState === 'error' ? 'error' : 'loaded');
  root.dataset.historyApi = range.available === null ? 'unknown' : String(range.available);
  document.querySelectorAll('#range button').forEach((button) => {
    button.setAttribute('aria-pressed', String(button.dataset.range === range.key));
    const long = button.dataset.range !== '15m';
    button.disabled = long && range.available === false;
    button.title = long && range.available === false ? NO_STORE : '';
  });
}

function headers() {
  const token = currentToken();
  return token ? { Authorization: 'Bearer ' + token } : {};
}

function encodeId(id) { return id.split('/').map(encodeURIComponent).join('/'); }

let probing = false;

/**
 * Ask once whether the server has /api/history at all (404: no store), with a
 * point the page shows (so a token's grant covers it) and the last minute.
 */
export async function probeHistoryApi(id) {
  if (range.available !== null || probing || typeof id !== 'string') return;
  probing = true;
  try {
    const response = await fetch('api/history?points=' + encodeId(id) + '&from=now-1m', {
      cache: 'no-store', credentials: 'same-origin', headers: headers()
    });
    range.available = response.status !== 404;
  } catch (e) {
    range.available = null;  // unreachable now: asked again with the next snapshot
  }
  probing = false;
  if (range.available === false && range.key !== '15m') range.key = '15m';
  show();
}

/** Read the selected long range for every charted point, a hundred points a request. */
async function load() {
  const key = range.key;
  if (key === '15m' || range.loading) return;
  const generation = ++range.generation;
  range.loading = true;
  show();
  const ids = wanted().filter((id) => { const p = mirror.points.get(id); return p && chartable(p.value); });
  const spec = RANGES[key];
  const now = Date.now() / 1000;
  const from = Math.floor(now - spec.seconds);
  const fresh = new Map();
  let state = 'loaded';
  try {
    for (let i = 0; i < ids.length; i += MAX_POINTS_PER_REQUEST) {
      const chunk = ids.slice(i, i + MAX_POINTS_PER_REQUEST);
      const url = 'api/history?points=' + chunk.map(encodeId).join(',') + '&from=' + from + '&step=' + spec.step;
      const response = await fetch(url, { cache: 'no-store', credentials: 'same-origin', headers: headers() });
      if (response.status === 404) {
        range.available = false;
        break;
      }
      if (!response.ok) {
        state = 'error';
        continue;
      }
      const body = await response.json();
      const points = body && body.points && typeof body.points === 'object' ? body.points : {};
      Object.keys(points).forEach((id) => {
        if (!Array.isArray(points[id])) return;
        fresh.set(id, points[id].filter((x) => Array.isArray(x) && typeof x[0] === 'number' && chartable(x[1])));
      });
    }
  } catch (e) {
    state = 'error';
  }
  range.loading = false;
  if (generation !== range.generation) return;
  if (range.available === false) range.key = '15m';
  else range.available = true;
  range.series = fresh;
  range.fetchedAt = Date.now();
  document.documentElement.dataset.rangeState = state;
  let samples = 0;
  fresh.forEach((s) => { samples += s.length; });
  document.documentElement.dataset.rangeSamples = String(samples);
  show();
  changed();
}

function select(key) {
  if (!RANGES[key] || key === range.key) return;
  range.key = key;
  range.series = new Map();
  range.generation++;
  range.loading = false;
  document.documentElement.dataset.rangeState = '';
  show();
  changed();
  if (key !== '15m') load();
}

/** A long range is read again now and then, so it keeps up with the store. */
export function refreshRange() {
  if (range.key !== '15m' && !range.loading && Date.now() - range.fetchedAt > REFRESH_MS) load();
}

/** Wire the range buttons; C{ids()} lists the charted points, C{onChange()} redraws them. */
export function initRanges(ids, onChange) {
  wanted = ids;
  changed = onChange;
  document.querySelectorAll('#range button').forEach((button) => {
    button.addEventListener('click', () => select(button.dataset.range));
  });
  show();
}
