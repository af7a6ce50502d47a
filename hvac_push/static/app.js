/* hvac-push live dashboard: the entry module, which wires the others together.
 * Plain JavaScript modules, no libraries, no build step, no network access
 * beyond the server that served this page.
 *
 * Data flow: client-limits.json -> terms.js (the server's limits); plant.json
 * every few seconds -> plant.js (every unit, its kind, counts and alarms); one
 * HvacPushClient (hvac-push-client.js, through socket.js) subscribed to what
 * the current view shows -> state.js (series) -> the views: overview.js (tiles),
 * unitpage.js and cards.js (a unit's points), alarms.js, header.js, detail.js,
 * and charts.js (canvases redrawn on the next frame). router.js says which view
 * the URL names; search.js finds units and points.
 */

import { alarmSource, onOpenAlarmPoint, renderAlarms } from './alarms.js';
import { onOpenPoint, rebuild, updateAllViews, updateView } from './cards.js';
import { markAllDirty, markDirty, onVisibilityChange, redrawDetail, detailPoint } from './charts.js';
import { $, el } from './dom.js';
import { initDetail, openDetail, renderDetailHead } from './detail.js';
import { showConnection, showConnectionAge, showPlantState, showTemperatureUnit } from './header.js';
import { onHistory, pumpHistory, requestHistory, resetHistory } from './history.js';
import { renderOverview, setOverviewFilter, tilePatterns, updateAllTiles, updateTileValue } from './overview.js';
import { askWhen, loadPlant, onPlant, plant, startPlant } from './plant.js';
import { initRanges, probeHistoryApi, refreshRange } from './ranges.js';
import { startRouter } from './router.js';
import { initSearch } from './search.js';
import { refreshAccepted, refreshRefused, initSignin, tokenFailed } from './signin.js';
import { client, currentToken, requireToken, showPatterns, startSocket, tokenRequired } from './socket.js';
import { applyChange, mirror, noteAlarms } from './state.js';
import { loadTerms, terms } from './terms.js';
import { currentUnit, hideUnitPage, refreshUnitKind, renderGroups, showUnitPage, unitPatterns } from './unitpage.js';
import {
  loadTemperatureUnit, saveTemperatureUnit, setTemperatureUnit, TEMP_KEY, temperatureUnit
} from './units.js';

let route = { view: 'overview', site: null, kind: null };
let pendingPoint = null;  // a point named in the URL, opened once it is in the mirror

// -- what the client tells us -------------------------------------------------------

function onChange(change) {
  const sampled = applyChange(change);
  sampled.forEach(markDirty);
  if (route.view === 'unit') {
    if (change.added || change.removed.length) rebuild();
    else change.points.forEach(updateView);
    renderGroups();
    const open = detailPoint();
    if (open && change.points.indexOf(open) >= 0) renderDetailHead();
    if (change.first || change.subscribe) requestHistory(change.points);
    if (pendingPoint && mirror.points.has(pendingPoint)) {
      openDetail(pendingPoint);
      pendingPoint = null;
    }
    if (change.snapshot && change.points.length) probeHistoryApi(change.points.slice().sort()[0]);
  } else {
    change.points.forEach(updateTileValue);
  }
  document.body.dataset.version = String(mirror.version);
}

function onAlarms() {
  noteAlarms();
  renderAlarms();
}

/** The alarms the panel lists: a unit page's live ones; on the overview, the plant's (polled) with live ones on top. */
function listedAlarms() {
  if (route.view === 'unit') return Array.from(mirror.alarms.values());
  const byId = new Map();
  plant.alarmList.forEach((a) => byId.set(a.id, a));
  mirror.alarms.forEach((a, id) => byId.set(id, a));
  return Array.from(byId.values());
}

// -- views --------------------------------------------------------------------------

function showRoute(next) {
  route = next;
  const unit = next.view === 'unit' ? next.site + '/' + next.unit : null;
  document.body.dataset.view = next.view;
  $('overview-page').hidden = unit !== null;
  $('unit-page').hidden = unit === null;
  if (unit) {
    pendingPoint = next.point ? unit + '/' + next.point : null;
    if (currentUnit() !== unit) {
      showUnitPage(unit);
      showPatterns(unitPatterns(unit));
      rebuild();
      requestHistory(Array.from(mirror.points.keys()));
    }
    if (pendingPoint && mirror.points.has(pendingPoint)) {
      openDetail(pendingPoint);
      pendingPoint = null;
    }
    document.title = next.unit + ' \u00b7 hvac-push';
    $('unit-title').focus({ preventScroll: true });
  } else {
    hideUnitPage();
    setOverviewFilter(next.site, next.kind);
    renderOverview();
    if (plant.loaded) showPatterns(tilePatterns());
    document.title = (next.site ? next.site + (next.kind ? ' \u00b7 ' + next.kind : '') + ' \u00b7 ' : '') + 'hvac-push \u00b7 live plant';
  }
  renderCrumbs();
  renderAlarms();
  markAllDirty();
}

function renderCrumbs() {
  const nav = $('crumbs');
  nav.textContent = '';
  const add = (text, href, current) => {
    const a = el('a', null, text);
    a.href = href;
    if (current) a.setAttribute('aria-current', 'page');
    nav.appendChild(a);
  };
  add('All sites', '#/', route.view === 'overview' && !route.site);
  if (route.site) add(route.site, '#/site/' + route.site, route.view === 'overview' && !route.kind);
  if (route.view === 'overview' && route.kind) add(route.kind, '#/site/' + route.site + '/' + route.kind, true);
  if (route.view === 'unit') add(route.unit, '#/unit/' + route.site + '/' + route.unit, true);
}

/** The header's counts: units and points by status, and units in alarm (all from plant.json). */
function renderCounts() {
  const counts = plant.totals;
  let units = 0;
  let alarmed = 0;
  let troubled = 0;
  plant.units.forEach((u) => {
    if (u.unit === 'site') return;
    units += 1;
    if (u.alarms > 0) alarmed += 1;
    const st = u.status || {};
    if ((st.down || 0) + (st.fault || 0) + (st.stale || 0) > 0) troubled += 1;
  });
  let total = 0;
  Object.keys(counts).forEach((k) => { total += counts[k]; });
  const box = $('summary');
  box.textContent = '';
  box.appendChild(el('span', 'sum', units + (units === 1 ? ' unit' : ' units') + ' \u00b7 ' + total + ' points'));
  if (alarmed) box.appendChild(el('span', 'sum sum-alarm', '\u25b2 ' + alarmed + ' in alarm'));
  if (troubled) box.appendChild(el('span', 'sum sum-trouble', '\u26a0 ' + troubled + ' with points not ok'));
  ['stale', 'fault', 'down', 'waiting'].forEach((s) => {
    if (counts[s]) box.appendChild(el('span', 'sum sum-' + s, counts[s] + ' ' + s));
  });
  box.dataset.units = String(units);
  box.dataset.points = String(total);
  showPlantState(counts.ok || 0, total);
  const sites = new Set();
  plant.units.forEach((u) => sites.add(u.site));
  $('site').textContent = sites.size === 1 ? Array.from(sites)[0] : '';
}

function onPlantRead() {
  renderCounts();
  if (route.view === 'overview') {
    renderOverview();
    showPatterns(tilePatterns());
    renderAlarms();
  } else {
    refreshUnitKind();
    renderGroups();
    markAllDirty();  // limits may have arrived
  }
}

// -- temperature unit -----------------------------------------------------------

function applyTempUnit(unit) {
  showTemperatureUnit(setTemperatureUnit(unit));
  updateAllViews();
  updateAllTiles();
  renderGroups();
  renderAlarms();
  if (detailPoint()) renderDetailHead();
  redrawDetail();
  markAllDirty();
}

// -- start ----------------------------------------------------------------------

async function start() {
  onOpenPoint(openDetail);
  onOpenAlarmPoint(() => {});  // the alarm's link opens its unit page
  alarmSource(listedAlarms);
  onVisibilityChange(pumpHistory);
  onHistory(markDirty);
  initDetail();
  initSearch();
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
  showConnection();
  // The server's limits first: the page paces its requests by them from the first one.
  await loadTerms();
  requireToken(terms.auth_required);
  initSignin();
  initRanges(() => (currentUnit() ? Array.from(mirror.points.keys()) : []), () => {
    redrawDetail();
    markAllDirty();
  });
  client.on('change', onChange);
  client.on('alarm', onAlarms);
  client.on('alarms', onAlarms);
  client.on('status', (state) => {
    if (state === 'connecting' || state === 'reconnecting') resetHistory();
  });
  client.on('error', (e) => {
    if (window.console && console.debug) console.debug('hvac-push: server error', e.code, e.detail);
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
  onPlant(onPlantRead);
  // plant.json needs the token the WebSocket needs; while the server is away, asking only fills the console.
  askWhen(() => (!tokenRequired() || currentToken() !== null) && client.state !== 'signed-out' &&
    client.state !== 'reconnecting' && !(client.state === 'connecting' && client.everLive));
  client.on('status', (state) => { if (state === 'live' && !plant.loaded) loadPlant(); });
  startSocket({
    onAuthFailed: tokenFailed,
    onRefreshAccepted: refreshAccepted,
    onRefreshRefused: refreshRefused,
    onStatus() {
      showConnection();
      renderAlarms();  // the Acknowledge buttons work only while live
    }
  });
  startPlant();
  startRouter(showRoute);
}

// Module scripts run after the document is parsed.
start();
