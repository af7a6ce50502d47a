/* What the page keeps beside the client's mirror (hvac-push-client.js holds the
 * points and alarms): the series behind the charts, which points carried
 * fractions, when each alarm started, and what the server turned out to
 * support. The views draw from it. No DOM.
 */

import { chartable } from './points.js';
import { client } from './socket.js';
import { terms } from './terms.js';

export const mirror = {
  // Points, alarms and where to resume live in the client's mirror (hvac-push-client.js).
  get points() { return client.mirror.points; },
  get alarms() { return client.mirror.alarms; },
  get epoch() { return client.mirror.epoch; },
  get version() { return client.mirror.version; },
  get alarmSeq() { return client.mirror.alarmSeq; },
  get lastData() { return client.mirror.lastData; },
  series: new Map(),      // id -> [[ts, value], ...] oldest first
  fractional: new Set(),  // ids that have carried a non-integer number
  support: { history: true, alarms: null, ack: true },
  pendingAcks: new Map(), // alarm id -> timer, while an ack waits for its alarm transition
  alarmStart: new Map()   // alarm id -> ts when this page first saw it annunciated (its "since")
};

let seenEpoch = null;

/**
 * The client changed points (C{change}: its 'change' event): extend their series.
 * Returns the ids whose series got a sample. A new epoch drops the charts.
 */
export function applyChange(change) {
  if (client.mirror.epoch !== seenEpoch) {
    if (seenEpoch !== null) {
      mirror.series.clear();
      mirror.alarmStart.clear();
    }
    seenEpoch = client.mirror.epoch;
  }
  const sampled = [];
  change.points.forEach((id) => {
    const p = client.mirror.points.get(id);
    if (!p) return;
    if (typeof p.value === 'number' && !Number.isInteger(p.value)) mirror.fractional.add(id);
    if (chartable(p.value) && typeof p.ts === 'number' && appendSample(id, p.ts, p.value)) sampled.push(id);
  });
  change.removed.forEach((id) => mirror.series.delete(id));
  return sampled;
}

/** Add one sample to a point's series; false when it is older than what we have. */
function appendSample(id, ts, value) {
  let s = mirror.series.get(id);
  if (!s) {
    s = [];
    mirror.series.set(id, s);
  }
  const last = s.length ? s[s.length - 1] : null;
  if (last && ts < last[0]) return false;
  if (last && ts === last[0]) s[s.length - 1] = [ts, value];
  else s.push([ts, value]);
  trimSeries(s);
  return true;
}

/** Keep the server's history window (and at most as many samples as it keeps). */
function trimSeries(s) {
  if (!s.length) return;
  const horizon = s[s.length - 1][0] - terms.history_window;
  let drop = 0;
  while (drop < s.length && s[drop][0] < horizon) drop++;
  if (s.length - drop > terms.history_max_samples) drop = s.length - terms.history_max_samples;
  if (drop) s.splice(0, drop);
}

/** Merge a C{history} answer into the series; false when it brought nothing. */
export function applyHistory(m) {
  if (typeof m.point !== 'string' || !Array.isArray(m.samples)) return false;
  const incoming = m.samples.filter((x) => Array.isArray(x) && typeof x[0] === 'number' && chartable(x[1]));
  if (!incoming.length) return false;
  const s = mirror.series.get(m.point) || [];
  const merged = s.concat(incoming).sort((a, b) => a[0] - b[0]);
  const out = [];
  merged.forEach((x) => {
    if (out.length && out[out.length - 1][0] === x[0]) out[out.length - 1] = x;
    else out.push(x);
  });
  trimSeries(out);
  mirror.series.set(m.point, out);
  return true;
}

/** A point's series is forgotten with the point (its view is gone). */
export function forgetSeriesIfGone(id) {
  if (!mirror.points.has(id)) mirror.series.delete(id);
}

// -- alarms ---------------------------------------------------------------------

/**
 * The alarms changed (the client applied a list or a transition): keep each alarm's
 * start time, which later transitions (acknowledged, shelved...) must not move, and
 * release acknowledgements that are done.
 */
export function noteAlarms() {
  mirror.support.alarms = true;
  mirror.alarms.forEach((a, id) => {
    if (!mirror.alarmStart.has(id) && typeof a.ts === 'number') mirror.alarmStart.set(id, a.ts);
  });
  mirror.alarmStart.forEach((_, id) => { if (!mirror.alarms.has(id)) mirror.alarmStart.delete(id); });
  mirror.pendingAcks.forEach((timer, id) => {
    const a = mirror.alarms.get(id);
    if (!a || a.state === 'acknowledged') clearPendingAck(id);
  });
}

export function clearPendingAck(id) {
  const timer = mirror.pendingAcks.get(id);
  if (timer !== undefined) {
    clearTimeout(timer);
    mirror.pendingAcks.delete(id);
  }
}
