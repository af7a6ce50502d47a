/* The alarm panel: the server's alarms, those that need attention first, then by
 * severity and age. Each says who acknowledged or shelved it (and their comment),
 * and offers what the operator may do in its state: Acknowledge (with an optional
 * comment), Shelve for a chosen time, Unshelve. A request waits, its button
 * disabled, for the server's answer; a refusal is shown for a few seconds next to
 * the alarm. It also refreshes the cards' alarm frames (cards.js), which follow
 * the same list.
 */

import { SEVERITY_RANK, showAlarms } from './cards.js';
import { $, el } from './dom.js';
import { formatClock, formatNumber, formatValue } from './format.js';
import { collator, prettyName, splitId } from './points.js';
import { connectionState, request } from './socket.js';
import { clearPendingAck, mirror } from './state.js';
import { displayNumber, displayUnit } from './units.js';

const ACK_TIMEOUT_MS = 8000;
const NOTE_MS = 6000;                       // how long a refusal stays next to its alarm
const SHELVE_CHOICES = [[15, '15 min'], [60, '1 h'], [480, '8 h']];
const KIND_LABEL = {
  high: 'High', low: 'Low', stale: 'Stale', fault: 'Fault', down: 'Down', source_down: 'Source down',
  out_of_service: 'Out of service', predicted: 'Predicted', short_cycling: 'Short cycling',
  supply_not_at_setpoint: 'Supply not at setpoint', heating_and_cooling: 'Heating and cooling',
  mixed_air_out_of_range: 'Mixed air out of range', low_delta_t: 'Low delta T', approach: 'Approach',
  stuck: 'Stuck', out_of_range: 'Out of range'
};
const STATE_LABEL = {
  active: 'Active', acknowledged: 'Acknowledged', returned: 'Returned', normal: 'Normal', latched: 'Latched',
  shelved: 'Shelved', suppressed: 'Suppressed', out_of_service: 'Out of service'
};
// States that still call for an operator (listed first, counted in the badge).
const ANNUNCIATED = new Set(['active', 'returned', 'latched']);
const ACKABLE = ANNUNCIATED;
const SHELVABLE = new Set(['active', 'acknowledged', 'returned', 'latched']);
const REFUSAL = {
  forbidden: 'Not allowed for your token',
  unknown_alarm: 'The server no longer lists this alarm',
  wrong_state: 'Not possible in this state',
  unknown_type: 'This server does not support it',
  unavailable: 'This server does not support it',
  rate_limited: 'The server is busy: try again'
};

const pendingShelves = new Map(); // alarm id -> timer, while a shelve or unshelve waits for its answer
const notes = new Map();          // alarm id -> {text, timer}: a refusal shown next to the alarm
const drafts = new Map();         // alarm id -> {comment, minutes}: what the operator typed, across redraws

let openPoint = () => {};
let source = () => Array.from(mirror.alarms.values());

/** C{list()} gives the alarms the panel shows (the current view's). */
export function alarmSource(list) { source = list; }

/** When the alarm was raised: the server's C{since}; from an older server, the first time this page saw it. */
export function alarmSince(a) {
  if (typeof a.since === 'number') return a.since;
  const start = mirror.alarmStart.get(a.id);
  return typeof start === 'number' ? start : a.ts;
}

/** C{open(id)} runs when an alarm's point is clicked. */
export function onOpenAlarmPoint(open) { openPoint = open; }

/** A kind or state in words, also one this page does not know (low_delta_t -> Low delta t). */
function words(table, key) {
  if (!key) return '';
  if (table[key]) return table[key];
  const text = String(key).replace(/_/g, ' ');
  return text.charAt(0).toUpperCase() + text.slice(1);
}

function compareAlarms(a, b) {
  const ua = ANNUNCIATED.has(a.state || 'active') ? 0 : 1;
  const ub = ANNUNCIATED.has(b.state || 'active') ? 0 : 1;
  const sa = SEVERITY_RANK[a.severity] !== undefined ? SEVERITY_RANK[a.severity] : 9;
  const sb = SEVERITY_RANK[b.severity] !== undefined ? SEVERITY_RANK[b.severity] : 9;
  return ua - ub || sa - sb || (alarmSince(b) || 0) - (alarmSince(a) || 0) || collator.compare(a.id, b.id);
}

function alarmValue(alarm, field) {
  const x = alarm[field];
  if (x === undefined || x === null) return '';
  const p = mirror.points.get(alarm.point);
  const unit = p ? p.unit : '';
  if (typeof x === 'number') return formatNumber(displayNumber(x, unit)) + ' ' + displayUnit(unit);
  return formatValue(x, unit, alarm.point);
}

function draft(id) {
  let d = drafts.get(id);
  if (!d) {
    d = { comment: '', minutes: SHELVE_CHOICES[0][0] };
    drafts.set(id, d);
  }
  return d;
}

function commentOf(id) {
  const d = drafts.get(id);
  return d && d.comment.trim() ? d.comment.trim().slice(0, 1000) : null;
}

/** Send an acknowledgement (with the typed comment, if any); its button waits for the alarm's transition. */
function acknowledge(id) {
  if (mirror.pendingAcks.has(id) || mirror.support.ack === false) return;
  const message = { type: 'ack', alarm: id };
  const comment = commentOf(id);
  if (comment) message.comment = comment;
  request(message).catch((e) => {
    clearPendingAck(id);
    if (e.code === 'unknown_type' || e.code === 'unavailable') acksUnsupported();
    alarmRefused(id, e.code);
  });
  mirror.pendingAcks.set(id, setTimeout(() => {
    mirror.pendingAcks.delete(id);
    renderAlarms();
  }, ACK_TIMEOUT_MS));
  drafts.delete(id);
  renderAlarms();
}

/** Shelve for the chosen minutes, or unshelve (C{minutes} null); waits for the server's C{shelved}. */
function shelve(id, minutes) {
  if (pendingShelves.has(id)) return;
  const message = minutes === null ? { type: 'unshelve', alarm: id } : { type: 'shelve', alarm: id, minutes };
  const comment = commentOf(id);
  if (comment) message.comment = comment;
  request(message).then(() => shelveAnswered(id), (e) => alarmRefused(id, e.code));
  pendingShelves.set(id, setTimeout(() => {
    pendingShelves.delete(id);
    renderAlarms();
  }, ACK_TIMEOUT_MS));
  drafts.delete(id);
  renderAlarms();
}

/** The server answered a shelve or unshelve (C{shelved}); the transition itself comes as an C{alarm}. */
export function shelveAnswered(id) {
  clearTimeout(pendingShelves.get(id));
  pendingShelves.delete(id);
  renderAlarms();
}

/** The server refused a request about alarm C{id} (C{code}: forbidden...): say so next to it for a while. */
export function alarmRefused(id, code) {
  if (pendingShelves.has(id)) {
    clearTimeout(pendingShelves.get(id));
    pendingShelves.delete(id);
  }
  const old = notes.get(id);
  if (old) clearTimeout(old.timer);
  const timer = setTimeout(() => {
    notes.delete(id);
    renderAlarms();
  }, NOTE_MS);
  notes.set(id, { text: (REFUSAL[code] || 'Refused') + ' (' + code + ')', timer });
  renderAlarms();
}

/** The server refuses acknowledgements from this page: disable the buttons and say why. */
export function acksUnsupported() {
  mirror.support.ack = false;
  mirror.pendingAcks.forEach((timer, id) => clearPendingAck(id));
}

function clock(ts) { return formatClock(ts).slice(0, 5); }

/** Who did what to the alarm, and their comment: from the server's C{by}, C{comment}, C{ts}, C{shelved_until}. */
function operatorLine(a) {
  const parts = [];
  const when = typeof a.ts === 'number' ? ' ' + clock(a.ts) : '';
  const by = a.by ? ' by ' + a.by : '';
  if (a.state === 'acknowledged') parts.push('acknowledged' + when + by);
  else if (a.state === 'shelved') {
    parts.push((typeof a.shelved_until === 'number' ? 'shelved until ' + clock(a.shelved_until) : 'shelved') + by);
  } else if (a.state === 'out_of_service') parts.push('out of service' + when + by);
  else if (a.state === 'suppressed' && a.suppressed_by) parts.push('suppressed by ' + a.suppressed_by);
  else if (a.by) parts.push('changed' + when + by);
  if (a.comment) parts.push('\u201c' + a.comment + '\u201d');
  return parts.filter(Boolean).join(' \u00b7 ');
}

function actionButton(className, text, disabled, onClick) {
  const button = el('button', className, text);
  button.type = 'button';
  button.disabled = disabled;
  button.addEventListener('click', onClick);
  return button;
}

/** The controls of one alarm: comment field, Acknowledge, Shelve with its duration, Unshelve. */
function actions(a, live) {
  const state = a.state || 'active';
  const canAck = ACKABLE.has(state);
  const canShelve = SHELVABLE.has(state);
  const canUnshelve = state === 'shelved';
  if (!canAck && !canShelve && !canUnshelve) return null;
  const d = draft(a.id);
  const box = el('div', 'alarm-actions');
  const comment = el('input', 'alarm-comment');
  comment.type = 'text';
  comment.maxLength = 1000;
  comment.placeholder = 'Comment (optional)';
  comment.setAttribute('aria-label', 'Comment for ' + a.id);
  comment.value = d.comment;
  comment.addEventListener('input', () => { d.comment = comment.value; });
  comment.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && canAck) acknowledge(a.id);
  });
  box.appendChild(comment);
  const buttons = el('div', 'alarm-buttons');
  const shelving = pendingShelves.has(a.id);
  if (canAck) {
    const pending = mirror.pendingAcks.has(a.id);
    const ack = actionButton('ack', pending ? 'Acknowledging\u2026' : 'Acknowledge',
      pending || mirror.support.ack === false || !live, () => acknowledge(a.id));
    if (mirror.support.ack === false) ack.title = 'This server does not accept acknowledgements from this page';
    buttons.appendChild(ack);
  }
  if (canShelve) {
    const minutes = el('select', 'shelve-minutes');
    minutes.setAttribute('aria-label', 'Shelve for');
    SHELVE_CHOICES.forEach(([value, label]) => {
      const option = el('option', null, label);
      option.value = String(value);
      minutes.appendChild(option);
    });
    minutes.value = String(d.minutes);
    minutes.addEventListener('change', () => { d.minutes = Number(minutes.value); });
    buttons.append(
      actionButton('shelve', shelving ? 'Shelving\u2026' : 'Shelve', shelving || !live, () => shelve(a.id, d.minutes)),
      minutes
    );
  }
  if (canUnshelve) {
    buttons.appendChild(actionButton('unshelve', shelving ? 'Unshelving\u2026' : 'Unshelve', shelving || !live,
      () => shelve(a.id, null)));
  }
  box.appendChild(buttons);
  return box;
}

/** Where the operator is typing (a comment field), to give it back its focus after a redraw. */
function focused() {
  const active = document.activeElement;
  if (!active || !active.classList || !active.classList.contains('alarm-comment')) return null;
  const li = active.closest('[data-alarm]');
  return li ? { id: li.dataset.alarm, start: active.selectionStart, end: active.selectionEnd } : null;
}

export function renderAlarms() {
  const list = $('alarm-list');
  const alarms = source().sort(compareAlarms);
  const live = connectionState() === 'live';
  const typing = focused();
  list.textContent = '';
  alarms.forEach((a) => {
    const li = el('li', 'alarm');
    li.dataset.alarm = a.id;
    li.dataset.state = a.state || 'active';
    li.dataset.severity = a.severity || 'warning';
    const head = el('div', 'alarm-head');
    head.append(
      el('span', 'sev', (a.severity || 'alarm').toUpperCase() + ' \u00b7 ' + words(KIND_LABEL, a.kind)),
      el('span', 'alarm-state', words(STATE_LABEL, a.state || 'active'))
    );
    li.appendChild(head);
    if (a.kind === 'source_down') {
      // One alarm for a whole source: its name, and the points it took down.
      li.appendChild(el('div', 'alarm-source', 'source ' + String(a.point || '').split('/')[0]));
    } else {
      const where = splitId(a.point || '');
      const what = el('a', 'alarm-point', where.unit + ' \u00b7 ' + prettyName(where.point));
      what.href = '#/unit/' + where.site + '/' + where.unit;
      what.title = 'Open ' + where.site + '/' + where.unit;
      what.addEventListener('click', () => openPoint(a.point));
      li.appendChild(what);
    }
    const text = a.message || (words(KIND_LABEL, a.kind) || 'Alarm') + ' on ' + (a.point || '');
    li.appendChild(el('div', 'alarm-msg', text));
    if (Array.isArray(a.points) && a.points.length) {
      const shown = a.points.slice(0, 6).join(', ') + (a.points.length > 6 ? ', \u2026' : '');
      li.appendChild(el('div', 'alarm-points', a.points.length + (a.points.length === 1 ? ' point: ' : ' points: ') + shown));
    }
    const facts = [];
    if (a.value !== undefined && a.value !== null) facts.push('value ' + alarmValue(a, 'value'));
    if (a.limit !== undefined && a.limit !== null) facts.push('limit ' + alarmValue(a, 'limit'));
    const since = alarmSince(a);
    if (typeof since === 'number') facts.push('since ' + formatClock(since));
    if (facts.length) li.appendChild(el('div', 'alarm-info', facts.join(' \u00b7 ')));
    const who = operatorLine(a);
    if (who) li.appendChild(el('div', 'alarm-by', who));
    const controls = actions(a, live);
    if (controls) li.appendChild(controls);
    const note = notes.get(a.id);
    if (note) {
      const n = el('div', 'alarm-note', note.text);
      n.setAttribute('role', 'alert');
      li.appendChild(n);
    }
    list.appendChild(li);
  });
  // Forget drafts and notes of alarms that left the list.
  const listed = new Set(alarms.map((a) => a.id));
  drafts.forEach((d, id) => { if (!listed.has(id)) drafts.delete(id); });
  if (typing) {
    const input = list.querySelector('[data-alarm="' + CSS.escape(typing.id) + '"] .alarm-comment');
    if (input) {
      input.focus();
      try { input.setSelectionRange(typing.start, typing.end); } catch (e) { /* not a text field */ }
    }
  }
  const count = alarms.length;
  const unacked = alarms.filter((a) => ANNUNCIATED.has(a.state || 'active')).length;
  $('alarm-count').textContent = String(count);
  $('alarm-count').dataset.unacked = String(unacked);
  const empty = $('alarm-empty');
  empty.hidden = count > 0;
  empty.textContent = mirror.support.alarms === false ? 'Alarms are not available from this server' : 'No active alarms';
  $('alarms').dataset.count = String(count);
  showAlarms();
}
