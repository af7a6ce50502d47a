/* The overview: per site, the units grouped by kind as a grid of tiles. A tile
 * says at a glance whether the unit runs, how its points are (ok, or how many
 * are stale/fault/down/waiting), its alarm count and highest severity (as
 * text and an icon, never colour alone), and the one or two key values of its
 * kind. Units that need attention sort first. Each tile is a link to the unit
 * page, so the keyboard, the back button and a sent link all work.
 *
 * Counts and alarms come from plant.js (polled); the tiles' values are live,
 * from the only points this view subscribes to (tilePatterns).
 */

import { $, el } from './dom.js';
import { formatValue } from './format.js';
import { KIND_ORDER, kindInfo, tilePoints } from './kinds.js';
import { collator, SITE_UNIT } from './points.js';
import { plant } from './plant.js';
import { mirror } from './state.js';
import { terms } from './terms.js';
import { displayUnit } from './units.js';

export const SEVERITY_RANK = { critical: 0, major: 1, minor: 2, warning: 3 };
const BAD = ['down', 'fault', 'stale', 'waiting'];
const MAX_EXACT = 48;   // up to this many tile points are subscribed one by one
const STATUS_ICON = { ok: '\u2713', waiting: '\u2026', stale: '\u29d6', fault: '\u2716', down: '\u2716' };

const tiles = new Map();        // "site/unit" -> {a, run, status, alarm, values: Map(point id -> {num, uom})}
const valueViews = new Map();   // point id -> {num, uom, tile}
let filter = { site: null, kind: null };

/**
 * The patterns the overview needs. A few tiles: their points one by one (exact, and
 * within a token that grants only some units). Many: per site, each point name some
 * tile shows (site/+/name), a handful of patterns whatever the plant's size.
 */
export function tilePatterns() {
  const names = new Map();   // site -> Set(names)
  const ids = [];
  plant.units.forEach((u) => {
    if (u.unit === SITE_UNIT || (filter.site && u.site !== filter.site) || (filter.kind && u.kind !== filter.kind)) return;
    if (!names.has(u.site)) names.set(u.site, new Set());
    tilePoints(u.kind, u.points).forEach((n) => {
      names.get(u.site).add(n);
      ids.push(u.site + '/' + u.unit + '/' + n);
    });
  });
  // Room for the unit page's pattern beside them while the view changes.
  if (ids.length <= Math.min(MAX_EXACT, terms.max_subscriptions - 2)) return ids.sort();
  const out = [];
  names.forEach((set, site) => set.forEach((n) => out.push(site + '/+/' + n)));
  return out.sort();
}

/** Show the whole plant, one site (C{site}) or one kind of it (C{kind}). */
export function setOverviewFilter(site, kind) {
  filter = { site: site || null, kind: kind || null };
}

function attention(u) {
  const sev = u.alarms > 0 ? (SEVERITY_RANK[u.severity] !== undefined ? SEVERITY_RANK[u.severity] : 4) : 9;
  const st = u.status || {};
  const bad = (st.down || 0) + (st.fault || 0) + (st.stale || 0);
  return { sev, bad };
}

/** Alarms first (most severe first), then units with points down/fault/stale, then by name. */
function compareUnits(a, b) {
  const x = attention(a);
  const y = attention(b);
  return x.sev - y.sev || (y.bad > 0) - (x.bad > 0) || collator.compare(a.unit, b.unit);
}

function statusText(u) {
  const st = u.status || {};
  const parts = BAD.filter((s) => st[s]).map((s) => st[s] + ' ' + s);
  return parts.length ? parts.join(', ') : 'all ok';
}

function worstStatus(u) {
  const st = u.status || {};
  for (let i = 0; i < BAD.length; i++) if (st[BAD[i]]) return BAD[i];
  return 'ok';
}

function makeTile(key, u) {
  const a = el('a', 'tile');
  a.href = '#/unit/' + key;
  a.dataset.unit = key;
  const head = el('div', 'tile-head');
  const name = el('span', 'tile-name', u.unit);
  const run = el('span', 'tile-run');
  head.append(name, run);
  const status = el('div', 'tile-status');
  const alarm = el('div', 'tile-alarm');
  const values = el('div', 'tile-values');
  a.append(head, status, alarm, values);
  const t = { a, run, status, alarm, values, kind: null, views: [] };
  tiles.set(key, t);
  return t;
}

function fillValues(key, t, u) {
  if (t.kind === u.kind && t.names === u.points.length) return;
  t.kind = u.kind;
  t.names = u.points.length;
  t.views.forEach((id) => valueViews.delete(id));
  t.views = [];
  t.values.textContent = '';
  const info = kindInfo(u.kind);
  info.keys.forEach(([name, label]) => {
    if (u.points.indexOf(name) < 0) return;
    const id = key + '/' + name;
    const box = el('span', 'tile-val');
    box.dataset.tilePoint = id;
    const num = el('span', 'num', '\u2014');
    const uom = el('span', 'uom');
    box.append(el('span', 'tile-key', label + ' '), num, uom);
    t.values.appendChild(box);
    valueViews.set(id, { num, uom, box });
    t.views.push(id);
    updateTileValue(id);
  });
  if (info.running && u.points.indexOf(info.running) >= 0) {
    const id = key + '/' + info.running;
    valueViews.set(id, { run: t.run, info });
    t.views.push(id);
    updateTileValue(id);
  } else {
    t.run.textContent = '';
  }
}

/** A tile's live value (or running flag) changed: C{id} is the point. */
export function updateTileValue(id) {
  const v = valueViews.get(id);
  if (!v) return;
  const p = mirror.points.get(id);
  if (v.run) {
    const on = p && (p.value === true || (typeof p.value === 'number' && p.value > 0));
    const known = p && p.value !== null && p.value !== undefined;
    v.run.dataset.on = known ? String(on) : 'unknown';
    v.run.textContent = !known ? '? No reading' : on ? '\u25b6 ' + v.info.on : '\u25a0 ' + v.info.off;
    return;
  }
  v.num.textContent = p ? formatValue(p.value, p.unit, id) : '\u2014';
  v.uom.textContent = p && typeof p.value === 'number' ? ' ' + displayUnit(p.unit) : '';
  v.box.dataset.status = p ? p.status : 'waiting';
}

function fillTile(key, t, u) {
  const worst = worstStatus(u);
  t.a.dataset.status = worst;
  t.status.textContent = (STATUS_ICON[worst] || '') + ' ' + statusText(u);
  t.status.dataset.status = worst;
  if (u.alarms > 0) {
    const sev = u.severity || 'alarm';
    t.alarm.hidden = false;
    t.alarm.textContent = '\u25b2 ' + u.alarms + (u.alarms === 1 ? ' alarm' : ' alarms') + ' \u00b7 ' + sev.toUpperCase();
    t.a.dataset.alarm = sev;
  } else {
    t.alarm.hidden = true;
    t.alarm.textContent = '';
    delete t.a.dataset.alarm;
  }
  const label = u.unit + ', ' + kindInfo(u.kind).one + ': ' + statusText(u) +
    (u.alarms ? ', ' + u.alarms + ' ' + (u.severity || '') + ' alarm' + (u.alarms === 1 ? '' : 's') : ', no alarms');
  t.a.title = label;
  fillValues(key, t, u);
}

/** Draw the overview from the plant summary: sections per site and kind, tiles in attention order. */
export function renderOverview() {
  const root = $('overview');
  const sites = new Map();   // site -> Map(kind -> [unit])
  plant.units.forEach((u) => {
    if (u.unit === SITE_UNIT) return;
    if (filter.site && u.site !== filter.site) return;
    if (filter.kind && u.kind !== filter.kind) return;
    if (!sites.has(u.site)) sites.set(u.site, new Map());
    const kinds = sites.get(u.site);
    if (!kinds.has(u.kind)) kinds.set(u.kind, []);
    kinds.get(u.kind).push(u);
  });
  const seen = new Set();
  const siteNames = Array.from(sites.keys()).sort(collator.compare);
  const sections = [];
  siteNames.forEach((site) => {
    const kinds = sites.get(site);
    const order = Array.from(kinds.keys()).sort((a, b) => {
      const ia = KIND_ORDER.indexOf(a) < 0 ? 99 : KIND_ORDER.indexOf(a);
      const ib = KIND_ORDER.indexOf(b) < 0 ? 99 : KIND_ORDER.indexOf(b);
      return ia - ib || collator.compare(a, b);
    });
    const section = sectionFor('site:' + site, 'h2', site, 'site-section');
    section.box.dataset.site = site;
    const groups = [];
    order.forEach((kind) => {
      const units = kinds.get(kind).sort(compareUnits);
      const alarmed = units.filter((u) => u.alarms > 0).length;
      const g = sectionFor('kind:' + site + '/' + kind, 'h3', '', 'kind-section');
      g.box.dataset.kind = kind;
      g.title.textContent = '';
      const link = el('a', 'kind-link', kindInfo(kind).label);
      link.href = '#/site/' + site + '/' + kind;
      g.title.append(link, el('span', 'kind-count', ' ' + units.length + (alarmed ? ' \u00b7 \u25b2 ' + alarmed + ' in alarm' : '')));
      const nodes = units.map((u) => {
        const key = u.site + '/' + u.unit;
        seen.add(key);
        const t = tiles.get(key) || makeTile(key, u);
        fillTile(key, t, u);
        return t.a;
      });
      syncChildren(g.grid, nodes);
      groups.push(g.box);
    });
    const siteLink = el('a', 'site-link', site);
    siteLink.href = '#/site/' + site;
    section.title.textContent = '';
    section.title.append(siteLink);
    syncChildren(section.grid, groups);
    sections.push(section.box);
  });
  tiles.forEach((t, key) => {
    if (!seen.has(key)) {
      t.views.forEach((id) => valueViews.delete(id));
      tiles.delete(key);
    }
  });
  syncChildren(root, sections);
  root.dataset.units = String(seen.size);
  root.dataset.ready = plant.loaded ? 'true' : 'false';
}

const sectionCache = new Map();

function sectionFor(key, heading, text, className) {
  let s = sectionCache.get(key);
  if (!s) {
    const box = el('section', className);
    const title = el(heading, className + '-title', text);
    const grid = el('div', className === 'kind-section' ? 'tiles' : 'kinds');
    box.append(title, grid);
    s = { box, title, grid };
    sectionCache.set(key, s);
  }
  return s;
}

/** Make C{parent}'s children exactly C{nodes}, in order, moving only what moved. */
function syncChildren(parent, nodes) {
  nodes.forEach((node, i) => {
    if (parent.children[i] !== node) parent.insertBefore(node, parent.children[i] || null);
  });
  while (parent.children.length > nodes.length) parent.removeChild(parent.lastChild);
}

/** Every tile value again (the temperature unit changed). */
export function updateAllTiles() {
  valueViews.forEach((_, id) => updateTileValue(id));
}
