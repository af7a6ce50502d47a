/* What a point id says: its site/unit/point parts, whether it is derived from
 * another point (<base>.<suffix>), what it is drawn as (row, chip, note or site
 * total), its label, and the order points appear in. Pure functions, no DOM.
 */

// Display order of the points that get a row (others follow alphabetically).
const POINT_ORDER = ['supply_temp', 'return_temp', 'setpoint', 'fan_speed', 'compressor', 'power', 'load'];
// Computed figures shown as compact chips under the rows, in this order.
const CHIPS = ['delta_t', 'cop', 'kw_per_ton', 'energy_kwh', 'energy_export_kwh', 'energy_cost', 'starts_per_hour',
  'compressor_starts', 'short_cycling', 'outside_schedule', 'simultaneous_heat_cool'];
// Yes/no flags whose "yes" means something is wrong.
const FLAGS = ['short_cycling', 'outside_schedule', 'simultaneous_heat_cool'];
const LABELS = {
  delta_t: '\u0394T', cop: 'COP', kw_per_ton: 'kW/ton', energy_kwh: 'Energy', energy_cost: 'Cost',
  energy_export_kwh: 'Export', starts_per_hour: 'Starts/h', compressor_starts: 'Starts', short_cycling: 'Short cyc.', outside_schedule: 'Off sched.',
  simultaneous_heat_cool: 'Heat+cool'
};
/** <site>/site/... holds the site's totals. */
export const SITE_UNIT = 'site';

/** Natural order: ahu-2 before ahu-10. */
export const collator = new Intl.Collator(undefined, { numeric: true, sensitivity: 'base' });

export function splitId(id) {
  const parts = String(id).split('/');
  return { site: parts[0] || '', unit: parts[1] || '', point: parts.slice(2).join('/') || '' };
}

/** "site/unit": the card a point belongs to. */
export function unitKey(id) {
  const p = splitId(id);
  return p.site + '/' + p.unit;
}

/** A yes/no point whose "yes" is a problem (shown YES/NO, amber when yes). */
export function isFlag(name) { return FLAGS.indexOf(name) >= 0; }

export function prettyName(name) {
  if (LABELS[name]) return LABELS[name];
  const words = String(name).replace(/[_.-]+/g, ' ').trim();
  return words ? words.charAt(0).toUpperCase() + words.slice(1) : String(name);
}

export function chartable(value) { return typeof value === 'number' || typeof value === 'boolean'; }

/** A derived point named <base>.<suffix>, e.g. supply_temp.forecast_15m. */
export function derivedOf(name) {
  const dot = name.indexOf('.');
  return dot > 0 ? { base: name.slice(0, dot), suffix: name.slice(dot + 1) } : null;
}

function pointRank(name) {
  let i = POINT_ORDER.indexOf(name);
  if (i >= 0) return i;
  i = CHIPS.indexOf(name);
  return i >= 0 ? 100 + i : 50;
}

/** Rows in their usual order, then others alphabetically, then chips. */
export function comparePoints(a, b) {
  const pa = splitId(a).point;
  const pb = splitId(b).point;
  return pointRank(pa) - pointRank(pb) || collator.compare(pa, pb);
}

/**
 * What a point is drawn as, given the other point names of its unit:
 *   row   a measured point: name, sparkline, big value
 *   chip  a computed figure (COP, energy...): small label, value, mini sparkline
 *   note  a forecast of a row's point, shown under that row's name
 *   total a site total, in the strip above the cards
 */
export function kindOf(id, names) {
  const parts = splitId(id);
  if (parts.unit === SITE_UNIT) return 'total';
  const d = derivedOf(parts.point);
  // A note needs a row to sit under: its base must be a measured point of the unit.
  if (d && names.has(d.base) && !derivedOf(d.base) && CHIPS.indexOf(d.base) < 0) return 'note';
  if (d || CHIPS.indexOf(parts.point) >= 0) return 'chip';
  return 'row';
}
