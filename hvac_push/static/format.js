/* Text for values and times: one decimal (or none for whole-number points),
 * ON/OFF and YES/NO for booleans, ages ("12 s ago") and clock times. The one
 * place that decides how a number reads, so cards, alarms and charts agree.
 */

import { isFlag, splitId } from './points.js';
import { mirror } from './state.js';
import { displayNumber, isTemperature } from './units.js';

/** One decimal (none from 1000 up, or for points that only ever carried whole numbers). */
export function formatNumber(v, whole) {
  if (typeof v !== 'number' || !isFinite(v)) return String(v);
  if (whole || Math.abs(v) >= 1000) return v.toFixed(0);
  return v.toFixed(1);
}

/** A point's value as shown (C{id} given: whole numbers stay whole, flags read YES/NO). */
export function formatValue(value, unit, id) {
  if (typeof value === 'boolean') {
    if (id !== undefined && isFlag(splitId(id).point)) return value ? 'YES' : 'NO';
    return value ? 'ON' : 'OFF';
  }
  if (typeof value === 'number') {
    const whole = id !== undefined && !isTemperature(unit) && unit !== 'K' && !mirror.fractional.has(id);
    return formatNumber(displayNumber(value, unit), whole);
  }
  if (value === null || value === undefined) return '\u2014';
  return String(value);
}

export function formatAge(ms) {
  const s = ms / 1000;
  if (s < 1) return 'just now';
  if (s < 60) return Math.floor(s) + ' s ago';
  if (s < 3600) return Math.floor(s / 60) + ' min ago';
  return Math.floor(s / 3600) + ' h ago';
}

/** HH:MM:SS in the viewer's time zone. */
export function formatClock(ts) {
  const d = new Date(ts * 1000);
  const two = (n) => (n < 10 ? '0' + n : String(n));
  return two(d.getHours()) + ':' + two(d.getMinutes()) + ':' + two(d.getSeconds());
}
