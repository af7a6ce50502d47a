/* Filling the charts from the server's history. The protocol asks one point at
 * a time, so requests are queued and sent at the page's pace (socket.js), the
 * charts in view first (the large chart before all, rows before chips, card by
 * card); the others wait until they are scrolled to. A request the server
 * dropped (rate_limited) goes back to the head of the queue.
 */

import { chartKind } from './cards.js';
import { detailPoint, isOnScreen } from './charts.js';
import { collator, comparePoints, chartable, unitKey } from './points.js';
import { holdRequests, maySend, request } from './socket.js';
import { applyHistory, mirror } from './state.js';
import { terms } from './terms.js';

const KIND_PRIORITY = { row: 0, chip: 1, total: 2 };

const RATE_LIMITED_PAUSE_MS = 1500;
const UNSUPPORTED = new Set(['unknown_type', 'unavailable', 'forbidden']);

let queue = [];   // point ids still to ask history for
let inflight = 0; // history requests sent and not answered yet
let answered = () => {};

/** C{onAnswer(id)} runs when a point's history arrived (to redraw its chart). */
export function onHistory(onAnswer) { answered = onAnswer; }

/** A new connection: whatever was queued is asked again by its first snapshot or update. */
export function resetHistory() { queue = []; inflight = 0; }

/** The server has no history for this page: charts fill from live data only. */
export function historyUnsupported() {
  mirror.support.history = false;
  queue = [];
}

/** Queue the charts of C{ids} that need their past. */
export function requestHistory(ids) {
  if (mirror.support.history === false) return;
  // Only points drawn as a chart need their past: the big rows first, card by card.
  const wanted = ids.filter((id) => {
    const p = mirror.points.get(id);
    return chartKind(id) !== null && p && chartable(p.value) && queue.indexOf(id) < 0;
  });
  wanted.sort((a, b) => KIND_PRIORITY[chartKind(a)] - KIND_PRIORITY[chartKind(b)] ||
    collator.compare(unitKey(a), unitKey(b)) || comparePoints(a, b));
  wanted.forEach((id) => queue.push(id));
  pumpHistory();
}

/** The large chart of C{id} was opened: ask for its past before anything else (unless we have it). */
export function requestFirst(id) {
  const p = mirror.points.get(id);
  const s = mirror.series.get(id);
  if (p && chartable(p.value) && (!s || s.length < 2) && queue.indexOf(id) < 0) {
    queue.unshift(id);
    pumpHistory();
  }
}

/** A request the server dropped: ask again first, once the bucket has refilled. */
export function retryHistory(id) { queue.unshift(id); }

/** Ask for the past of the charts in view (the detail chart first); the others wait until scrolled to. */
export function pumpHistory() {
  if (mirror.support.history === false) queue = [];
  const detail = detailPoint();
  // How many charts in view still wait for their past (0 once they are all filled).
  // A view shows only the points it subscribed to (one unit's): all of them are wanted.
  const waiting = inflight + queue.length;
  document.body.dataset.historyPending = String(waiting);
  if (mirror.support.history === false) return;
  while (queue.length && maySend()) {
    let index = queue.indexOf(detail);
    if (index < 0) index = queue.findIndex((id) => isOnScreen(id));
    if (index < 0) index = 0;
    const id = queue.splice(index, 1)[0];
    if (!sendHistory(id)) {
      queue.unshift(id);
      return;
    }
  }
}

function sendHistory(id) {
  const now = Date.now() / 1000;
  const s = mirror.series.get(id);
  // The whole window, unless our series already reaches back that far:
  // then only the gap before the newest sample (the time we were away).
  let since = now - terms.history_window;
  if (s && s.length > 1 && s[0][0] <= since + 5) since = s[s.length - 2][0];
  inflight += 1;
  request({ type: 'history', point: id, since }).then((m) => {
    inflight -= 1;
    if (applyHistory(m)) answered(id);
    pumpHistory();
  }, (e) => {
    inflight -= 1;
    if (e.code === 'rate_limited') {
      holdRequests(RATE_LIMITED_PAUSE_MS);  // dropped by the server: ask again once its bucket refilled
      retryHistory(id);
    } else if (UNSUPPORTED.has(e.code)) {
      historyUnsupported();
    }
    pumpHistory();
  });
  return true;
}
