/* hvac-push live dashboard: the entry module, which wires the others together.
 * Plain JavaScript modules, no libraries, no build step, no network access
 * beyond the server that served this page.
 *
 * Data flow: client-limits.json -> terms.js (the server's limits), then one
 * WebSocket to ./ws (socket.js) -> messages, dispatched here -> state.js (the
 * mirror) -> the views: cards.js, alarms.js, header.js, detail.js (text updated
 * at once) and charts.js (canvases redrawn on the next frame). history.js fills
 * the charts' past. signin.js asks for a token when the server needs one.
 */

import {
  acksUnsupported, alarmRefused, onOpenAlarmPoint, renderAlarms, shelveAnswered
} from './alarms.js';
import { onOpenPoint, rebuild, renderSummary, updateAllViews, updateView } from './cards.js';
import { detailPoint, markAllDirty, markDirty, onVisibilityChange, redrawDetail } from './charts.js';
import { $ } from './dom.js';
import { initDetail, openDetail, renderDetailHead } from './detail.js';
import { showConnection, showConnectionAge, showTemperatureUnit } from './header.js';
import {
  historyUnsupported, pumpHistory, requestHistory, resetHistory, retryHistory
} from './history.js';
import { refreshAccepted, refreshRefused, initSignin, tokenFailed } from './signin.js';
import { abandon, answered, firstState, holdRequests, requireToken, startSocket } from './socket.js';
import {
  applyAlarm, applyHistory, applySnapshot, applyUpdate, clearPendingAck, mirror, replaceAlarms
} from './state.js';
import { initRanges, probeHistoryApi, refreshRange } from './ranges.js';
import { loadTerms, terms } from './terms.js';
import {
  loadTemperatureUnit, saveTemperatureUnit, setTemperatureUnit, TEMP_KEY, temperatureUnit
} from './units.js';

const RATE_LIMITED_PAUSE_MS = 1500;

// -- messages -------------------------------------------------------------------

function handleMessage(m) {
  switch (m.type) {
    case 'snapshot': onSnapshot(m); break;
    case 'update': onUpdate(m); break;
    case 'history':
      answered('history', m.point);
      if (applyHistory(m)) markDirty(m.point);
      pumpHistory();
      break;
    case 'alarm': if (applyAlarm(m)) renderAlarms(); break;
    case 'alarms':
      if (Array.isArray(m.alarms)) {
        replaceAlarms(m.alarms, m.alarm_seq);
        renderAlarms();
      }
      break;
    case 'acked': answered('ack', m.alarm); break; // the alarm transition carries the new state
    case 'shelved':
      answered('shelve', m.alarm);
      shelveAnswered(m.alarm);
      break;
    case 'pong': answered('ping'); break;
    case 'authenticated': {
      const asked = answered('auth');
      if (asked) refreshAccepted(asked.token);
      break;
    }
    case 'error': onError(m); break;
    default: break; // anything newer than this page
  }
}

/** Show what a snapshot or update changed. */
function showMerged(merged) {
  merged.stored.forEach(updateView);
  merged.sampled.forEach(markDirty);
  if (merged.stored.length) {
    renderSummary();
    const open = detailPoint();
    if (open && merged.stored.indexOf(open) >= 0) renderDetailHead();
  }
}

function onSnapshot(m) {
  const merged = applySnapshot(m, firstState());
  showMerged(merged);
  rebuild();
  renderAlarms();
  const ids = Object.keys(m.points && typeof m.points === 'object' ? m.points : {});
  requestHistory(ids);
  probeHistoryApi(ids.slice().sort()[0]);  // whether the longer trend ranges are there
}

function onUpdate(m) {
  const first = firstState();
  const merged = applyUpdate(m);
  if (merged === null) {
    abandon();  // another epoch: reconnect, and get a snapshot
    return;
  }
  showMerged(merged);
  if (merged.added) {
    rebuild();
    renderAlarms();
  }
  // Resumed: fill the gap in the charts from the server's history.
  if (first) requestHistory(Array.from(mirror.points.keys()));
}

/** Errors answer our own requests; the page carries on without what is missing. */
function onError(m) {
  const failed = answered(null);
  const code = m.error;
  if (code === 'rate_limited') {
    // Dropped by the server: ask again once the bucket has refilled.
    if (window.console && console.debug) console.debug('hvac-push: server error', code, m.detail);
    holdRequests(RATE_LIMITED_PAUSE_MS);
    if (failed && failed.type === 'history') retryHistory(failed.id);
    if (failed && failed.type === 'ack') clearPendingAck(failed.id);
    if (failed && (failed.type === 'ack' || failed.type === 'shelve')) alarmRefused(failed.id, code);
    renderAlarms();
    return;
  }
  if (failed && failed.type === 'auth') {
    refreshRefused();  // the connection keeps its current grant
    return;
  }
  const unsupported = code === 'unknown_type' || code === 'unavailable' || code === 'forbidden';
  if (failed && failed.type === 'history' && unsupported) {
    historyUnsupported();
  } else if (failed && failed.type === 'ack') {
    clearPendingAck(failed.id);
    if (unsupported) acksUnsupported();
    alarmRefused(failed.id, code);
  } else if (failed && failed.type === 'shelve') {
    alarmRefused(failed.id, code);  // forbidden (no shelve claim), wrong_state...: said next to the alarm
  } else if (window.console && console.debug) {
    console.debug('hvac-push: server error', code, m.detail);
  }
}

// -- temperature unit -----------------------------------------------------------

function applyTempUnit(unit) {
  showTemperatureUnit(setTemperatureUnit(unit));
  updateAllViews();
  renderAlarms();
  if (detailPoint()) renderDetailHead();
  redrawDetail();
  markAllDirty();
}

// -- start ----------------------------------------------------------------------

async function start() {
  onOpenPoint(openDetail);
  onOpenAlarmPoint(openDetail);
  onVisibilityChange(pumpHistory);
  initDetail();
  $('temp-c').addEventListener('click', () => { saveTemperatureUnit('C'); applyTempUnit('C'); });
  $('temp-f').addEventListener('click', () => { saveTemperatureUnit('F'); applyTempUnit('F'); });
  window.addEventListener('storage', (e) => {
    if (e.key === TEMP_KEY) applyTempUnit(loadTemperatureUnit());
  });
  window.addEventListener('resize', () => {
    redrawDetail();
    markAllDirty();
  });
  applyTempUnit(temperatureUnit());
  renderAlarms();
  renderSummary();
  showConnection();
  // The server's limits first: the page paces its requests by them from the first one.
  await loadTerms();
  requireToken(terms.auth_required);
  initSignin();
  initRanges(() => Array.from(mirror.points.keys()), () => {
    redrawDetail();
    markAllDirty();
  });
  setInterval(() => {
    showConnectionAge();
    pumpHistory();
  }, 250);
  setInterval(() => {
    // Time moves on even when values do not: scroll every chart once a second.
    refreshRange();
    redrawDetail();
    markAllDirty();
  }, 1000);
  startSocket({
    onConnect: resetHistory,
    onMessage: handleMessage,
    onAuthFailed: tokenFailed,
    onStatus() {
      showConnection();
      renderAlarms();  // the Acknowledge buttons work only while live
    }
  });
}

// Module scripts run after the document is parsed.
start();
