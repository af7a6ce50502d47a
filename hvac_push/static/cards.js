/* The unit page's card: one view per point of the unit shown (a row, chip, note
 * or site total, see points.js kindOf), kept in step with the mirror. Existing
 * elements are reused, so a value changing only rewrites its text.
 */

import { markAllDirty, track, untrack } from './charts.js';
import { $, el } from './dom.js';
import { formatClock, formatNumber, formatValue } from './format.js';
import {
  collator, comparePoints, derivedOf, isFlag, kindOf, prettyName, SITE_UNIT, splitId, unitKey
} from './points.js';
import { forgetSeriesIfGone, mirror } from './state.js';
import { displayUnit } from './units.js';

const LOOKAHEAD_CAP_MIN = 120;    // minutes_to_limit at this value means "no crossing expected"
const LIMIT_SOON_MIN = 15;        // the server's "predicted" alarm horizon: highlight from here
export const SEVERITY_RANK = { critical: 0, major: 1, minor: 2, warning: 3 };
// waiting: declared, no reading yet; down: the source cannot reach the device (docs/protocol.md).
const STATUS_RANK = { ok: 0, waiting: 1, stale: 2, fault: 3, down: 4 };

const cards = new Map();   // unit key -> {card, rows, chips, badge, title, site}
const views = new Map();   // point id -> {kind, el, num, uom, tag, canvas, notes, label}
let openPoint = () => {};
let shownUnit = null;      // "site/unit" of the unit page, or null (no cards)

/** The unit page shows C{key} ("site/unit"), or nothing (null). */
export function showUnit(key) {
  shownUnit = key;
  rebuild();
}

/** C{open(id)} runs when a row, chip or total is clicked (or Enter/Space pressed on it). */
export function onOpenPoint(open) { openPoint = open; }

/** What a point is drawn as when it has a chart ('row', 'chip' or 'total'), else null. */
export function chartKind(id) {
  const v = views.get(id);
  return v && v.canvas ? v.kind : null;
}

/** Make the cards and views match the set of points; keep existing elements. */
export function rebuild() {
  const byUnit = new Map();
  const totals = [];
  mirror.points.forEach((_, id) => {
    if (unitKey(id) !== shownUnit) return;
    if (splitId(id).unit === SITE_UNIT) {
      totals.push(id);
      return;
    }
    const key = unitKey(id);
    if (!byUnit.has(key)) byUnit.set(key, []);
    byUnit.get(key).push(id);
  });
  const sites = new Set();
  byUnit.forEach((_, key) => sites.add(key.split('/')[0]));
  totals.forEach((id) => sites.add(splitId(id).site));

  // Remove what is gone.
  views.forEach((v, id) => {
    if (!mirror.points.has(id)) dropView(id);
  });
  cards.forEach((c, key) => {
    if (!byUnit.has(key)) {
      c.card.remove();
      cards.delete(key);
    }
  });

  const container = $('units');
  const keys = Array.from(byUnit.keys()).sort(collator.compare);
  keys.forEach((key, index) => {
    const c = cards.get(key) || makeCard(key);
    c.site.textContent = sites.size > 1 ? key.split('/')[0] : '';
    if (container.children[index] !== c.card) container.insertBefore(c.card, container.children[index] || null);
    const ids = byUnit.get(key).sort(comparePoints);
    const names = new Set(ids.map((id) => splitId(id).point));
    let rowIndex = 0;
    let chipIndex = 0;
    ids.forEach((id) => {
      const kind = kindOf(id, names);
      let v = views.get(id);
      if (v && v.kind !== kind) {
        dropView(id);
        v = null;
      }
      if (!v) v = makeView(id, kind);
      if (kind === 'row') {
        if (c.rows.children[rowIndex] !== v.el) c.rows.insertBefore(v.el, c.rows.children[rowIndex] || null);
        rowIndex++;
      } else if (kind === 'chip') {
        if (c.chips.children[chipIndex] !== v.el) c.chips.insertBefore(v.el, c.chips.children[chipIndex] || null);
        chipIndex++;
      }
    });
    // Notes go under their row, after it exists.
    ids.forEach((id) => {
      const v = views.get(id);
      if (v.kind !== 'note') return;
      const base = views.get(unitKey(id) + '/' + derivedOf(splitId(id).point).base);
      if (base && base.notes && v.el.parentNode !== base.notes) base.notes.appendChild(v.el);
    });
    c.chips.hidden = chipIndex === 0;
    ids.forEach(updateView);
    updateCard(key);
  });

  const strip = $('totals');
  totals.sort(comparePoints).forEach((id, i) => {
    const v = views.get(id) || makeView(id, 'total');
    if (strip.children[i + 1] !== v.el) strip.insertBefore(v.el, strip.children[i + 1] || null);
    updateView(id);
  });
  strip.hidden = totals.length === 0;

  $('placeholder').hidden = keys.length > 0 || totals.length > 0 || shownUnit === null;
  markAllDirty();
}

function dropView(id) {
  const v = views.get(id);
  if (!v) return;
  if (v.canvas) untrack(id, v.el);
  v.el.remove();
  views.delete(id);
  forgetSeriesIfGone(id);
}

function makeCard(key) {
  const unit = key.split('/').slice(1).join('/');
  const card = el('section', 'card');
  card.dataset.unit = key;
  const head = el('header', 'card-head');
  const title = el('h2', 'card-title', unit);
  const site = el('span', 'card-site');
  const badge = el('span', 'card-badge');
  badge.hidden = true;
  head.append(title, site, badge);
  const rows = el('div', 'card-points');
  const chips = el('div', 'card-chips');
  card.append(head, rows, chips);
  const c = { card, rows, chips, badge, title, site };
  cards.set(key, c);
  return c;
}

function makeView(id, kind) {
  const name = splitId(id).point;
  const v = { kind, el: null, num: el('span', 'num'), uom: el('span', 'uom'), tag: null, canvas: null, notes: null };
  if (kind === 'note') {
    v.num.className = 'note-num';
    v.uom.className = 'note-uom';
    v.el = el('span', 'note');
    v.label = el('span', 'note-label');
    v.el.append(v.label, v.num, v.uom);
  } else {
    v.el = el('div', kind === 'row' ? 'pt' : 'chip');
    v.el.tabIndex = 0;
    v.el.setAttribute('role', 'button');
    const label = el('div', kind === 'row' ? 'pt-name' : 'chip-name', prettyName(name));
    v.tag = el('span', 'pt-tag');
    label.appendChild(v.tag);
    v.canvas = el('canvas', kind === 'row' ? 'spark' : 'spark mini');
    v.canvas.setAttribute('aria-hidden', 'true');
    const value = el('div', kind === 'row' ? 'pt-value' : 'chip-value');
    value.append(v.num, v.uom);
    if (kind === 'row') {
      const left = el('div', 'pt-label');
      v.notes = el('div', 'pt-notes');
      left.append(label, v.notes);
      v.el.append(left, v.canvas, value);
    } else {
      v.el.append(label, value, v.canvas);
    }
    v.el.addEventListener('click', () => openPoint(id));
    v.el.addEventListener('keydown', (e) => {
      if (e.key === 'Enter' || e.key === ' ') {
        e.preventDefault();
        openPoint(id);
      }
    });
  }
  v.el.dataset.point = id;
  views.set(id, v);
  if (v.canvas) track(id, v.el, v.canvas);
  return v;
}

/** Show a point's current value, status and unit in its view. */
export function updateView(id) {
  const v = views.get(id);
  const p = mirror.points.get(id);
  if (!v || !p) return;
  const status = STATUS_RANK[p.status] !== undefined ? p.status : 'ok';
  const e = v.el;
  e.dataset.status = status;
  e.dataset.version = String(p.version);
  e.dataset.value = JSON.stringify(p.value);
  e.dataset.kind = typeof p.value;
  const name = splitId(id).point;
  if (v.kind === 'note') {
    updateNote(v, name, p);
    return;
  }
  v.num.textContent = formatValue(p.value, p.unit, id);
  v.uom.textContent = typeof p.value === 'number' ? displayUnit(p.unit) : '';
  if (v.tag) v.tag.textContent = status === 'ok' ? '' : status.toUpperCase();
  e.title = id + (p.ts ? ' \u00b7 measured ' + formatClock(p.ts) : '');
  if (typeof p.value === 'boolean') {
    e.dataset.on = String(p.value);
    if (isFlag(name)) e.dataset.flag = String(p.value);
  } else {
    delete e.dataset.on;
    delete e.dataset.flag;
  }
  if (v.kind === 'row' || v.kind === 'chip') updateCard(unitKey(id));
}

/** Every view again (the temperature unit changed). */
export function updateAllViews() {
  views.forEach((_, id) => updateView(id));
}

/** Forecasts under their row: the 15-minute one, and the time to a limit when one is near. */
function updateNote(v, name, p) {
  const suffix = derivedOf(name).suffix;
  const forecast = /^forecast_(\d+)m$/.exec(suffix);
  if (forecast) {
    v.label.textContent = 'Forecast +' + forecast[1] + ' min: ';
    v.num.textContent = formatValue(p.value, p.unit, undefined);
    v.uom.textContent = '';
    v.el.hidden = forecast[1] !== '15';
    v.el.dataset.note = 'forecast';
  } else if (/^forecast_\d+m_skill$/.test(suffix) && typeof p.value === 'number') {
    // The server publishes a forecast only while this measured skill is above 0 (docs/derived.md).
    const minutes = /^forecast_(\d+)m/.exec(suffix)[1];
    v.label.textContent = 'Forecast +' + minutes + ' min: ';
    v.num.textContent = p.value > 0 ? formatNumber(p.value * 100, true) + ' % less error than the best simple guess'
                                    : 'not shown, a simple guess does as well';
    v.uom.textContent = '';
    v.el.hidden = minutes !== '15';
    v.el.dataset.note = 'forecast-skill';
  } else if (suffix === 'minutes_to_limit' && typeof p.value === 'number') {
    v.label.textContent = p.value <= 0 ? 'forecast: past limit' : 'forecast: limit in ';
    v.num.textContent = p.value <= 0 ? '' : formatNumber(p.value, true);
    v.uom.textContent = p.value <= 0 ? '' : ' min';
    v.el.hidden = p.value >= LOOKAHEAD_CAP_MIN;
    v.el.dataset.note = p.value <= LIMIT_SOON_MIN ? 'limit-soon' : 'limit';
  } else {
    v.label.textContent = prettyName(suffix) + ' ';
    v.num.textContent = formatValue(p.value, p.unit, undefined);
    v.uom.textContent = typeof p.value === 'number' ? ' ' + displayUnit(p.unit) : '';
  }
  v.el.title = name + ': ' + formatValue(p.value, p.unit, undefined) + ' ' + displayUnit(p.unit);
}

/** A card's border (its worst status), and its alarm frame and badge. */
function updateCard(key) {
  const c = cards.get(key);
  if (!c) return;
  let worst = 'ok';
  [c.rows, c.chips].forEach((box) => {
    Array.prototype.forEach.call(box.children, (node) => {
      const status = node.dataset.status;
      if (STATUS_RANK[status] > STATUS_RANK[worst]) worst = status;
    });
  });
  c.card.dataset.status = worst;
  let count = 0;
  let severity = null;
  mirror.alarms.forEach((a) => {
    if (typeof a.point === 'string' && unitKey(a.point) === key) {
      count += 1;
      if (severity === null || SEVERITY_RANK[a.severity] < SEVERITY_RANK[severity]) severity = a.severity;
    }
  });
  c.badge.hidden = count === 0;
  c.badge.textContent = count === 1 ? '1 alarm' : count + ' alarms';
  if (severity) c.card.dataset.alarm = severity;
  else delete c.card.dataset.alarm;
}

/** The alarms changed: every card's frame and badge, and the triangle on alarmed points. */
export function showAlarms() {
  cards.forEach((_, key) => updateCard(key));
  const alarmed = new Set();
  mirror.alarms.forEach((a) => alarmed.add(a.point));
  views.forEach((v, id) => {
    if (alarmed.has(id)) v.el.dataset.alarmed = 'true';
    else delete v.el.dataset.alarmed;
  });
}
