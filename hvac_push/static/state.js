/* The page's local mirror of the server: points, alarms, the series behind the
 * charts, and what the server turned out to support. Messages change it here,
 * and only here; the functions say what changed, and the views draw from it.
 * No DOM.
 */

import { chartable } from './points.js';
import { terms } from './terms.js';

export const mirror = {
  points: new Map(),      // id -> {value, unit, ts, version, status}
  epoch: null,            // of the last snapshot or update processed: where to resume from
  version: null,
  alarms: new Map(),      // alarm id -> ALARM (never in state "normal")
  alarmSeq: null,         // seq of the last alarm message applied
  series: new Map(),      // id -> [[ts, value], ...] oldest first
  fractional: new Set(),  // ids that have carried a non-integer number
  support: { history: true, alarms: null, ack: true },
  pendingAcks: new Map(), // alarm id -> timer, while an ack waits for its alarm transition
  lastData: 0             // Date.now() of the newest snapshot or update
};

function pointsOf(m) { return m.points && typeof m.points === 'object' ? m.points : {}; }

/** Store points and extend their series: {added (a new point appeared), stored ids, sampled ids}. */
function mergePoints(points) {
  let added = false;
  const stored = [];
  const sampled = [];
  Object.keys(points).forEach((id) => {
    const p = points[id];
    if (!p || typeof p !== 'object') return;
    if (!mirror.points.has(id)) added = true;
    mirror.points.set(id, p);
    if (typeof p.value === 'number' && !Number.isInteger(p.value)) mirror.fractional.add(id);
    if (chartable(p.value) && typeof p.ts === 'number' && appendSample(id, p.ts, p.value)) sampled.push(id);
    stored.push(id);
  });
  return { added, stored, sampled };
}

/**
 * A snapshot; C{first} when it is the first state of this connection. The first
 * one (or a resync) is the whole state and replaces ours; one of another epoch
 * (another server lifetime) also drops the charts and alarms.
 */
export function applySnapshot(m, first) {
  const points = pointsOf(m);
  const newEpoch = typeof m.epoch === 'string' && m.epoch !== mirror.epoch;
  if (first || m.resync === true) {
    if (newEpoch) {
      mirror.series.clear();
      mirror.alarms.clear();
      mirror.alarmSeq = null;
    }
    mirror.points.clear();
    if (m.alarms === undefined && (mirror.support.alarms === null || newEpoch)) mirror.support.alarms = false;
  }
  if (typeof m.epoch === 'string') mirror.epoch = m.epoch;
  if (typeof m.version === 'number') mirror.version = m.version;
  const merged = mergePoints(points);
  if (Array.isArray(m.alarms)) replaceAlarms(m.alarms, m.alarm_seq);
  mirror.lastData = Date.now();
  return merged;
}

/** An update; L{null} when it belongs to another epoch (its versions mean nothing here: start over). */
export function applyUpdate(m) {
  if (typeof m.epoch === 'string' && mirror.epoch !== null && m.epoch !== mirror.epoch) {
    mirror.epoch = null;
    mirror.version = null;
    return null;
  }
  if (typeof m.epoch === 'string') mirror.epoch = m.epoch;
  if (typeof m.version === 'number') mirror.version = m.version;
  const merged = mergePoints(pointsOf(m));
  mirror.lastData = Date.now();
  return merged;
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

/** The whole alarm list (in a snapshot, or sent on resume when a replay cannot reach back far enough). */
export function replaceAlarms(list, seq) {
  mirror.support.alarms = true;
  mirror.alarms.clear();
  list.forEach((alarm) => {
    if (alarm && typeof alarm.id === 'string' && alarm.state !== 'normal') mirror.alarms.set(alarm.id, alarm);
  });
  mirror.alarmSeq = typeof seq === 'number' ? seq : null;
  mirror.pendingAcks.forEach((timer, id) => {
    const a = mirror.alarms.get(id);
    if (!a || a.state === 'acknowledged') clearPendingAck(id);
  });
}

/** One alarm transition; false when there is nothing to apply (malformed, or already applied). */
export function applyAlarm(m) {
  const alarm = m.alarm;
  if (!alarm || typeof alarm.id !== 'string') return false;
  if (typeof m.seq === 'number') {
    if (mirror.alarmSeq !== null && m.seq <= mirror.alarmSeq) return false;
    mirror.alarmSeq = m.seq;
  }
  mirror.support.alarms = true;
  if (alarm.state === 'normal') mirror.alarms.delete(alarm.id);
  else mirror.alarms.set(alarm.id, alarm);
  // An ack is done once the alarm is acknowledged or gone; until then the button waits.
  if (alarm.state === 'acknowledged' || alarm.state === 'normal') clearPendingAck(alarm.id);
  return true;
}

export function clearPendingAck(id) {
  const timer = mirror.pendingAcks.get(id);
  if (timer !== undefined) {
    clearTimeout(timer);
    mirror.pendingAcks.delete(id);
  }
}
