/* The large chart of one point, in a <dialog>: opened by a click (or Enter) on a
 * row, chip, total or alarm; its head shows the value and the point's forecasts,
 * and charts.js draws the chart. Escape, × or a click beside it closes it.
 */

import { detailPoint, hideDetailChart, redrawDetail, showDetailChart } from './charts.js';
import { $ } from './dom.js';
import { formatNumber, formatValue } from './format.js';
import { requestFirst } from './history.js';
import { prettyName, splitId } from './points.js';
import { mirror } from './state.js';
import { displayNumber, displayUnit } from './units.js';

export function openDetail(id) {
  if (!mirror.points.has(id)) return;
  const dialog = $('detail');
  const parts = splitId(id);
  $('detail-title').textContent = parts.unit + ' \u00b7 ' + prettyName(parts.point);
  $('detail-id').textContent = id;
  showDetailChart(id, $('detail-chart'), $('detail-stats'));
  renderDetailHead();
  if (!dialog.open) {
    if (typeof dialog.showModal === 'function') dialog.showModal();
    else dialog.setAttribute('open', '');
  }
  requestFirst(id);
  redrawDetail();
}

function closeDetail() {
  hideDetailChart();
  const dialog = $('detail');
  if (dialog.open) {
    if (typeof dialog.close === 'function') dialog.close();
    else dialog.removeAttribute('open');
  }
}

/** The value, status and forecasts above the chart (the chart itself redraws on its own). */
export function renderDetailHead() {
  const id = detailPoint();
  const p = mirror.points.get(id);
  if (!p) return;
  $('detail-num').textContent = formatValue(p.value, p.unit, id);
  $('detail-uom').textContent = typeof p.value === 'number' ? displayUnit(p.unit) : '';
  $('detail').dataset.status = p.status;
  // Forecasts of this point, when the server computes them.
  const parts = [];
  mirror.points.forEach((f, fid) => {
    const m = /^(.*)\.forecast_(\d+)m$/.exec(fid);
    if (m && m[1] === id && typeof f.value === 'number') {
      parts.push([Number(m[2]), 'in ' + m[2] + ' min ' + formatNumber(displayNumber(f.value, f.unit)) + ' ' + displayUnit(f.unit)]);
    }
  });
  parts.sort((a, b) => a[0] - b[0]);
  // Say what the numbers are: the server's estimates of where the value is heading, not measurements.
  $('detail-forecast').textContent = parts.length
    ? 'Forecast by the server (smoothed trend, not a measurement): ' + parts.map((x) => x[1]).join(' \u00b7 ') : '';
}

/** Wire the dialog's close button, backdrop and close event. */
export function initDetail() {
  $('detail-close').addEventListener('click', closeDetail);
  $('detail').addEventListener('close', hideDetailChart);
  $('detail').addEventListener('click', (e) => {
    if (e.target === $('detail')) closeDetail();  // a click on the backdrop
  });
}
