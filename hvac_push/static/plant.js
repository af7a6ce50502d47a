/* The plant at a glance, read from the server's ./plant.json every few seconds:
 * every unit's kind, point names (for the search), counts of its points by
 * status, its alarms and their highest severity, and the alarm limits of its
 * points (drawn on the trend charts). The overview subscribes only to the
 * points its tiles show; everything else it knows about a unit comes from here.
 */

import { currentToken } from './socket.js';

const POLL_MS = 3000;

export const plant = {
  loaded: false,
  units: new Map(),    // "site/unit" -> {site, unit, kind, points: [names], status: {ok: n...}, alarms, severity, limits}
  totals: {},          // status -> number of points
  alarmList: [],
  error: null
};

let listeners = [];
let timer = null;

/** C{fn()} runs after every successful read. */
export function onPlant(fn) { listeners.push(fn); }

let mayAsk = () => true;

/** C{fn()} says whether to ask now (not while the server is known to be away, nor without a needed token). */
export function askWhen(fn) { mayAsk = fn; }

export async function loadPlant() {
  if (!mayAsk()) return false;
  const token = currentToken();
  try {
    const response = await fetch('plant.json', {
      cache: 'no-store', credentials: 'same-origin', headers: token ? { Authorization: 'Bearer ' + token } : {}
    });
    if (!response.ok) {
      plant.error = 'HTTP ' + response.status;
      return false;
    }
    const body = await response.json();
    const units = new Map();
    (Array.isArray(body.units) ? body.units : []).forEach((u) => {
      if (u && typeof u.site === 'string' && typeof u.unit === 'string') units.set(u.site + '/' + u.unit, u);
    });
    plant.units = units;
    plant.totals = body.points && typeof body.points === 'object' ? body.points : {};
    plant.alarmList = Array.isArray(body.alarm_list) ? body.alarm_list : [];
    plant.loaded = true;
    plant.error = null;
    listeners.forEach((fn) => fn());
    return true;
  } catch (e) {
    plant.error = String(e);
    return false;
  }
}

/** Read now, then every few seconds. */
export function startPlant() {
  if (timer !== null) return;
  loadPlant();
  timer = setInterval(loadPlant, POLL_MS);
}

/** The limits the server's alarms use for C{site/unit/point} ({high, low}), or null. */
export function limitsOf(id) {
  const parts = String(id).split('/');
  const u = plant.units.get(parts[0] + '/' + parts[1]);
  const l = u && u.limits ? u.limits[parts.slice(2).join('/')] : null;
  return l || null;
}
