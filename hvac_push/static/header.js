/* The header's connection badge (Connecting / Live · updated N s ago /
 * Reconnecting · retry in N s), the offline banner and dimming while not live,
 * and the pressed state of the °C/°F switch.
 */

import { $ } from './dom.js';
import { formatAge } from './format.js';
import { connectionState, hasBeenLive, retryDueAt } from './socket.js';
import { mirror } from './state.js';

const LABEL = { live: 'Live', connecting: 'Connecting', reconnecting: 'Reconnecting', 'signed-out': 'Signed out' };
// Points whose value is fine, of all: a connection to the server is not a view of the plant.
const plant = { ok: 0, total: 0 };

/** How much of the plant is live (app.js counts it from plant.json); the badge says so. */
export function showPlantState(ok, total) {
  if (plant.ok === ok && plant.total === total) return;
  plant.ok = ok;
  plant.total = total;
  showConnection();
}

function liveLabel() {
  if (plant.total > 0 && plant.ok === 0) return 'Connected \u00b7 no live data';
  if (plant.ok < plant.total) return 'Live \u00b7 ' + (plant.total - plant.ok) + ' of ' + plant.total + ' points not live';
  return LABEL.live;
}

/** The connection state changed (socket.js). */
export function showConnection() {
  const state = connectionState();
  const box = $('conn');
  box.dataset.state = state;
  if (mirror.epoch) box.dataset.epoch = mirror.epoch;
  $('conn-label').textContent = state === 'live' ? liveLabel() : LABEL[state] || 'Reconnecting';
  box.dataset.plant = plant.total > 0 && plant.ok === 0 ? 'blind' : plant.ok < plant.total ? 'partial' : 'whole';
  const offline = state !== 'live' && hasBeenLive();
  document.body.classList.toggle('offline', offline);
  $('offline-banner').hidden = !offline;
  showConnectionAge();
}

/** The age of the newest data, and when the next attempt is due: refreshed by a timer. */
export function showConnectionAge() {
  const now = Date.now();
  let text = '';
  if (connectionState() === 'live') {
    text = mirror.lastData ? 'updated ' + formatAge(now - mirror.lastData) : '';
  } else {
    const parts = [];
    const due = retryDueAt();
    if (due !== null) {
      const wait = Math.max(0, Math.ceil((due - now) / 1000));
      parts.push(wait > 0 ? 'retry in ' + wait + ' s' : 'retrying');
    }
    if (mirror.lastData) parts.push('last update ' + formatAge(now - mirror.lastData));
    text = parts.join(' \u00b7 ');
  }
  $('conn-age').textContent = text;
}

/** The °C/°F switch shows C{unit} ('C' or 'F') as pressed; <html data-temp> follows. */
export function showTemperatureUnit(unit) {
  $('temp-c').setAttribute('aria-pressed', String(unit === 'C'));
  $('temp-f').setAttribute('aria-pressed', String(unit === 'F'));
  document.documentElement.dataset.temp = unit;
}
