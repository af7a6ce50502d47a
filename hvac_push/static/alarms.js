/* The alarm panel: the server's alarms, unacknowledged first, then by severity
 * and age, each with an Acknowledge button that sends {"type":"ack"} and waits,
 * disabled, for the server's alarm transition. It also refreshes the cards'
 * alarm frames (cards.js), which follow the same list.
 */

import { SEVERITY_RANK, showAlarms } from './cards.js';
import { $, el } from './dom.js';
import { formatClock, formatNumber, formatValue } from './format.js';
import { collator, prettyName, splitId } from './points.js';
import { connectionState, request } from './socket.js';
import { clearPendingAck, mirror } from './state.js';
import { displayNumber, displayUnit } from './units.js';

const ACK_TIMEOUT_MS = 8000;
const KIND_LABEL = {
  high: 'High', low: 'Low', stale: 'Stale', fault: 'Fault', down: 'Down', source_down: 'Source down',
  out_of_service: 'Out of service', predicted: 'Predicted', short_cycling: 'Short cycling'
};
const STATE_LABEL = { active: 'Active', acknowledged: 'Acknowledged', returned: 'Returned', normal: 'Normal' };

let openPoint = () => {};

/** C{open(id)} runs when an alarm's point is clicked. */
export function onOpenAlarmPoint(open) { openPoint = open; }

function compareAlarms(a, b) {
  const ua = a.state === 'acknowledged' ? 1 : 0;
  const ub = b.state === 'acknowledged' ? 1 : 0;
  const sa = SEVERITY_RANK[a.severity] !== undefined ? SEVERITY_RANK[a.severity] : 9;
  const sb = SEVERITY_RANK[b.severity] !== undefined ? SEVERITY_RANK[b.severity] : 9;
  return ua - ub || sa - sb || (b.ts || 0) - (a.ts || 0) || collator.compare(a.id, b.id);
}

function alarmValue(alarm, field) {
  const x = alarm[field];
  if (x === undefined || x === null) return '';
  const p = mirror.points.get(alarm.point);
  const unit = p ? p.unit : '';
  if (typeof x === 'number') return formatNumber(displayNumber(x, unit)) + ' ' + displayUnit(unit);
  return formatValue(x, unit, alarm.point);
}

/** Send an acknowledgement; its button waits until the alarm's transition arrives (or a timeout). */
function acknowledge(id) {
  if (mirror.pendingAcks.has(id) || mirror.support.ack === false) return;
  if (!request({ type: 'ack', alarm: id }, { type: 'ack', id })) return;
  mirror.pendingAcks.set(id, setTimeout(() => {
    mirror.pendingAcks.delete(id);
    renderAlarms();
  }, ACK_TIMEOUT_MS));
  renderAlarms();
}

/** The server refuses acknowledgements from this page: disable the buttons and say why. */
export function acksUnsupported() {
  mirror.support.ack = false;
  mirror.pendingAcks.forEach((timer, id) => clearPendingAck(id));
}

export function renderAlarms() {
  const list = $('alarm-list');
  const alarms = Array.from(mirror.alarms.values()).sort(compareAlarms);
  const live = connectionState() === 'live';
  list.textContent = '';
  alarms.forEach((a) => {
    const li = el('li', 'alarm');
    li.dataset.alarm = a.id;
    li.dataset.state = a.state || 'active';
    li.dataset.severity = a.severity || 'warning';
    const head = el('div', 'alarm-head');
    head.append(
      el('span', 'sev', (a.severity || 'alarm').toUpperCase() + ' \u00b7 ' + (KIND_LABEL[a.kind] || a.kind || '')),
      el('span', 'alarm-state', STATE_LABEL[a.state] || a.state || '')
    );
    const where = splitId(a.point || '');
    const what = el('button', 'alarm-point', where.unit + ' \u00b7 ' + prettyName(where.point));
    what.type = 'button';
    what.title = 'Show the trend of ' + (a.point || '');
    what.addEventListener('click', () => { if (a.point) openPoint(a.point); });
    const text = a.message || ((KIND_LABEL[a.kind] || a.kind || 'Alarm') + ' on ' + (a.point || ''));
    const msg = el('div', 'alarm-msg', text);
    const facts = [];
    if (a.value !== undefined && a.value !== null) facts.push('value ' + alarmValue(a, 'value'));
    if (a.limit !== undefined && a.limit !== null) facts.push('limit ' + alarmValue(a, 'limit'));
    if (typeof a.ts === 'number') facts.push('since ' + formatClock(a.ts));
    const info = el('div', 'alarm-info', facts.join(' \u00b7 '));
    li.append(head, what, msg, info);
    if (a.state === 'active' || a.state === 'returned') {
      const button = el('button', 'ack');
      button.type = 'button';
      const pending = mirror.pendingAcks.has(a.id);
      button.textContent = pending ? 'Acknowledging\u2026' : 'Acknowledge';
      button.disabled = pending || mirror.support.ack === false || !live;
      if (mirror.support.ack === false) button.title = 'This server does not accept acknowledgements from this page';
      button.addEventListener('click', () => acknowledge(a.id));
      li.appendChild(button);
    }
    list.appendChild(li);
  });
  const count = alarms.length;
  const unacked = alarms.filter((a) => a.state !== 'acknowledged').length;
  $('alarm-count').textContent = String(count);
  $('alarm-count').dataset.unacked = String(unacked);
  const empty = $('alarm-empty');
  empty.hidden = count > 0;
  empty.textContent = mirror.support.alarms === false ? 'Alarms are not available from this server' : 'No active alarms';
  $('alarms').dataset.count = String(count);
  showAlarms();
}
