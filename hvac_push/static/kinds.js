/* Equipment kinds as the dashboard shows them: the group heading on the
 * overview, which point says the unit is running (and the words for it), and
 * the one or two key values of its tiles. The server names the kind
 * (plant.json, from hvac_push.analytics.equipment); an unknown kind gets the
 * defaults. Pure data, no DOM.
 */

const DEFAULT = {
  label: 'Other units', one: 'Unit', running: 'compressor', on: 'Running', off: 'Stopped',
  keys: [['supply_temp', 'Supply'], ['power', 'Power']]
};

export const KINDS = {
  chiller: { ...DEFAULT, label: 'Chillers', one: 'Chiller', keys: [['supply_temp', 'CHW supply'], ['power', 'Power']] },
  crac: { ...DEFAULT, label: 'CRACs', one: 'CRAC', on: 'Cooling', off: 'Idle', keys: [['supply_temp', 'Supply air'], ['power', 'Power']] },
  ahu: { ...DEFAULT, label: 'AHUs', one: 'Air handler', on: 'Cooling', off: 'Idle', keys: [['supply_temp', 'Supply air'], ['power', 'Power']] },
  boiler: { ...DEFAULT, label: 'Boilers', one: 'Boiler', running: 'burner', keys: [['supply_temp', 'HW supply'], ['power', 'Power']] },
  heat_pump: { ...DEFAULT, label: 'Heat pumps', one: 'Heat pump', keys: [['supply_temp', 'Supply'], ['power', 'Power']] },
  vav: { ...DEFAULT, label: 'VAV boxes', one: 'VAV box', running: null, keys: [['supply_temp', 'Supply air'], ['airflow', 'Airflow']] },
  meter: { ...DEFAULT, label: 'Meters', one: 'Meter', running: null, keys: [['power', 'Power'], ['energy_kwh', 'Energy']] },
  unknown: DEFAULT
};

/** The order kinds are listed in on the overview. */
export const KIND_ORDER = ['chiller', 'crac', 'ahu', 'boiler', 'heat_pump', 'vav', 'meter', 'unknown'];

export function kindInfo(kind) { return KINDS[kind] || DEFAULT; }

/** The point names a tile of C{kind} shows (running flag first), among the unit's C{names}. */
export function tilePoints(kind, names) {
  const k = kindInfo(kind);
  const wanted = (k.running ? [k.running] : []).concat(k.keys.map((x) => x[0]));
  return wanted.filter((n) => names.indexOf(n) >= 0);
}
