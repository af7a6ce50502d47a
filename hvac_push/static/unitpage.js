/* The unit page: one unit, every point of it. On top, what matters for its kind
 * side by side (a chiller's supply, return, delta T and kW per ton; an air
 * handler's supply air against its setpoint), then large trend charts of its
 * key points with the setpoint and the alarm limits drawn, then every point as
 * a row or chip with its sparkline (cards.js). It subscribes to this unit's
 * points only (site/unit/#); leaving the page unsubscribes.
 */

import { markAllDirty, trackTrend, untrackTrends } from './charts.js';
import { showUnit } from './cards.js';
import { $, el } from './dom.js';
import { formatNumber, formatValue } from './format.js';
import { kindInfo } from './kinds.js';
import { plant } from './plant.js';
import { prettyName } from './points.js';
import { mirror } from './state.js';
import { displayNumber, displayUnit } from './units.js';

const KW_PER_TON = 3.517;  // kW of cooling in one ton of refrigeration

let current = null;        // {key, site, unit, kind}
const cells = [];          // [{value, compute}] of the groups panel

/** The patterns of the unit page of C{key} ("site/unit"). */
export function unitPatterns(key) { return [key + '/#']; }

function point(name) {
  return current ? mirror.points.get(current.key + '/' + name) : undefined;
}

function num(name) {
  const p = point(name);
  return p && typeof p.value === 'number' ? p.value : null;
}

function shown(name) {
  const p = point(name);
  return p ? formatValue(p.value, p.unit, current.key + '/' + name) + (typeof p.value === 'number' ? ' ' + displayUnit(p.unit) : '') : '\u2014';
}

/** A temperature difference in the viewer's unit (K, or °F for a difference in °F). */
function delta(a, b) {
  if (a === null || b === null) return '\u2014';
  const p = point('supply_temp');
  const d = displayNumber(a, p ? p.unit : '') - displayNumber(b, p ? p.unit : '');
  return (d >= 0 ? '+' : '') + formatNumber(d) + ' ' + (displayUnit('K') === 'K' ? 'K' : '\u00b0F');
}

/** What the panel shows for each kind: [label, text()] pairs; "computed here" marks what the page derives. */
function groupsFor(kind) {
  const supplyVsSetpoint = [
    ['Supply air', () => shown('supply_temp')],
    ['Setpoint', () => shown('setpoint')],
    ['Supply \u2212 setpoint', () => delta(num('supply_temp'), num('setpoint'))],
  ];
  if (kind === 'chiller') {
    return [['Chilled water', [
      ['Supply', () => shown('supply_temp')],
      ['Return', () => shown('return_temp')],
      ['\u0394T', () => (point('delta_t') ? shown('delta_t') : delta(num('return_temp'), num('supply_temp')) + ' (computed here)')],
      ['kW per ton', () => {
        if (point('kw_per_ton')) return shown('kw_per_ton');
        const power = num('power');
        const load = num('load');
        return power !== null && load ? formatNumber(power / (load / KW_PER_TON)) + ' kW/ton (computed here)' : '\u2014';
      }],
      ['Power', () => shown('power')],
      ['Running', () => shown('compressor')],
    ]]];
  }
  if (kind === 'ahu') {
    return [['Supply air against setpoint', supplyVsSetpoint.concat([['Fan speed', () => shown('fan_speed')], ['Cooling', () => shown('compressor')]])]];
  }
  if (kind === 'crac') {
    return [['Air', supplyVsSetpoint.concat([['Return air', () => shown('return_temp')], ['Fan speed', () => shown('fan_speed')]])]];
  }
  return [['Key values', [['Supply', () => shown('supply_temp')], ['Return', () => shown('return_temp')], ['Power', () => shown('power')]]]];
}

/** Open the unit page of C{key}; C{pointName} (optional) is the point to open in the large chart. */
export function showUnitPage(key) {
  const [site, unit] = key.split('/');
  const info = plant.units.get(key);
  const kind = info ? info.kind : 'unknown';
  current = { key, site, unit, kind };
  $('unit-title').textContent = unit;
  $('unit-kind').textContent = kindInfo(kind).one + ' \u00b7 ' + site;
  $('unit-crumb-site').textContent = site;
  $('unit-crumb-site').href = '#/site/' + site;
  $('unit-crumb-kind').textContent = kindInfo(kind).label;
  $('unit-crumb-kind').href = '#/site/' + site + '/' + kind;
  // The groups panel.
  const panel = $('unit-groups');
  panel.textContent = '';
  cells.length = 0;
  groupsFor(kind).forEach(([title, items]) => {
    const group = el('section', 'group');
    group.appendChild(el('h3', 'group-title', title));
    const list = el('dl', 'group-items');
    items.forEach(([label, compute]) => {
      const item = el('div', 'group-item');
      const dd = el('dd', null, '\u2014');
      item.append(el('dt', null, label), dd);
      list.appendChild(item);
      cells.push({ dd, compute });
    });
    group.appendChild(list);
    panel.appendChild(group);
  });
  // The large trends: the kind's key values.
  untrackTrends();
  const trends = $('unit-trends');
  trends.textContent = '';
  kindInfo(kind).keys.forEach(([name, label]) => {
    const id = key + '/' + name;
    const fig = el('figure', 'trend');
    fig.dataset.trend = id;
    const caption = el('figcaption', 'trend-title', label === prettyName(name) ? label : label + ' \u00b7 ' + prettyName(name));
    const canvas = el('canvas', 'trend-chart');
    canvas.setAttribute('role', 'img');
    canvas.setAttribute('aria-label', 'Trend of ' + label + ' with its setpoint and alarm limits');
    const stats = el('div', 'trend-stats');
    fig.append(caption, canvas, stats);
    trends.appendChild(fig);
    trackTrend(id, canvas, stats);
  });
  showUnit(key);
  renderGroups();
  markAllDirty();
}

export function hideUnitPage() {
  current = null;
  untrackTrends();
  showUnit(null);
}

export function currentUnit() { return current ? current.key : null; }

/** The plant summary arrived or changed: a page opened before it knew the unit's kind is drawn again. */
export function refreshUnitKind() {
  if (!current) return;
  const info = plant.units.get(current.key);
  if (info && info.kind !== current.kind) showUnitPage(current.key);
}

/** The groups panel again (a value of the unit changed, or the temperature unit). */
export function renderGroups() {
  if (!current) return;
  cells.forEach((c) => {
    // "(computed here)": a figure this page derives, not one the server measured or computed.
    const text = c.compute();
    const derived = text.endsWith(' (computed here)');
    c.dd.textContent = derived ? text.slice(0, -' (computed here)'.length) : text;
    if (derived) c.dd.appendChild(el('span', 'computed', 'computed by this page'));
  });
}
