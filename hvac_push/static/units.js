/* °C or °F: the viewer's choice (kept in localStorage so it survives reloads and
 * is shared by every tab), and the conversion of values and units into it. Only
 * temperatures and temperature differences (K) change; other units stay as sent.
 */

export const DEG = '\u00b0';
/** The localStorage key; a `storage` event with it means another tab switched. */
export const TEMP_KEY = 'hvac-push.temperature-unit';

let chosen = loadTemperatureUnit();

export function isTemperature(unit) {
  return unit === DEG + 'C' || unit === 'degC' || unit === DEG + 'F' || unit === 'degF';
}

function isFahrenheit(unit) { return unit === DEG + 'F' || unit === 'degF'; }

/** 'C' or 'F'. */
export function temperatureUnit() { return chosen; }

export function setTemperatureUnit(unit) {
  chosen = unit === 'F' ? 'F' : 'C';
  return chosen;
}

export function loadTemperatureUnit() {
  try {
    return window.localStorage.getItem(TEMP_KEY) === 'F' ? 'F' : 'C';
  } catch (e) {
    return 'C';
  }
}

export function saveTemperatureUnit(unit) {
  try { window.localStorage.setItem(TEMP_KEY, unit); } catch (e) { /* private mode: not persisted */ }
}

/** A value in the unit the viewer chose (only temperatures and temperature differences change). */
export function displayNumber(value, unit) {
  if (typeof value !== 'number') return value;
  if (unit === 'K') return chosen === 'F' ? value * 9 / 5 : value;
  if (!isTemperature(unit)) return value;
  const celsius = isFahrenheit(unit) ? (value - 32) * 5 / 9 : value;
  return chosen === 'F' ? celsius * 9 / 5 + 32 : celsius;
}

export function displayUnit(unit) {
  if (unit === 'K') return chosen === 'F' ? DEG + 'F' : 'K';
  if (!isTemperature(unit)) return unit || '';
  return DEG + chosen;
}
