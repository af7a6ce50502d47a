/* hvac-push live dashboard: plain JavaScript, no libraries, no network access
 * beyond the server that served this page.
 *
 * Data flow: one WebSocket to ./ws -> `state` (points, alarms, chart series)
 * -> the DOM (text updated at once) and canvases (redrawn on the next frame).
 */
(function () {
  'use strict';

  // -- settings ---------------------------------------------------------------

  var SUBPROTOCOL = 'hvac-push.v1';
  var HISTORY_WINDOW_S = 15 * 60;   // what the charts keep and ask the server for
  var SPARK_WINDOW_S = 10 * 60;     // what a card's sparkline shows
  var MIN_SPAN_S = 5;               // the shortest time span a chart is stretched to
  var MAX_SAMPLES = 2000;           // per point, whatever its rate
  var BACKOFF_BASE_MS = 500;        // first retry after 0.25-0.5 s ...
  var BACKOFF_CAP_MS = 10000;       // ... doubling up to 5-10 s
  var PING_EVERY_MS = 10000;
  var SILENCE_LIMIT_MS = 30000;     // no message for this long: assume the link is dead
  var ACK_TIMEOUT_MS = 8000;
  // The server allows 20 messages per second with a burst of 40; stay inside that.
  var SEND_RATE = 18;
  var SEND_BURST = 36;
  var RATE_LIMITED_PAUSE_MS = 1500;
  var TEMP_KEY = 'hvac-push.temperature-unit';
  var DEG = '\u00b0';
  var TIME_STEPS = [1, 2, 5, 10, 15, 30, 60, 120, 180, 300, 600, 900, 1800];

  // Display order of the points that get a row (others follow alphabetically).
  var POINT_ORDER = ['supply_temp', 'return_temp', 'setpoint', 'fan_speed', 'compressor', 'power', 'load'];
  // Computed figures shown as compact chips under the rows, in this order.
  var CHIPS = ['delta_t', 'cop', 'kw_per_ton', 'energy_kwh', 'energy_cost', 'starts_per_hour',
    'short_cycling', 'outside_schedule', 'simultaneous_heat_cool'];
  // Yes/no flags whose "yes" means something is wrong.
  var FLAGS = ['short_cycling', 'outside_schedule', 'simultaneous_heat_cool'];
  var LABELS = {
    delta_t: '\u0394T', cop: 'COP', kw_per_ton: 'kW/ton', energy_kwh: 'Energy', energy_cost: 'Cost',
    starts_per_hour: 'Starts/h', short_cycling: 'Short cyc.', outside_schedule: 'Off sched.',
    simultaneous_heat_cool: 'Heat+cool'
  };
  var SITE_UNIT = 'site';           // <site>/site/... holds the site's totals
  var LOOKAHEAD_CAP_MIN = 120;      // minutes_to_limit at this value means "no crossing expected"
  var LIMIT_SOON_MIN = 15;          // the server's "predicted" alarm horizon: highlight from here

  var SEVERITY_RANK = { critical: 0, major: 1, minor: 2, warning: 3 };
  var STATUS_RANK = { ok: 0, stale: 1, fault: 2 };
  var KIND_LABEL = { high: 'High', low: 'Low', stale: 'Stale', fault: 'Fault', predicted: 'Predicted', short_cycling: 'Short cycling' };
  var STATE_LABEL = { active: 'Active', acknowledged: 'Acknowledged', returned: 'Returned', normal: 'Normal' };

  var collator = new Intl.Collator(undefined, { numeric: true, sensitivity: 'base' });

  // -- state ------------------------------------------------------------------

  var state = {
    points: new Map(),      // id -> {value, unit, ts, version, status}
    epoch: null,
    version: null,
    alarms: new Map(),      // alarm id -> ALARM
    alarmSeq: null,
    series: new Map(),      // id -> [[ts, value], ...] oldest first
    fractional: new Set(),  // ids that have carried a non-integer number
    support: { history: true, alarms: null, ack: true },
    pendingAcks: new Map(), // alarm id -> timer
    tempUnit: loadTempUnit()
  };

  var conn = {
    ws: null,
    state: 'connecting',    // connecting | live | reconnecting
    everLive: false,
    gotState: false,        // this connection has had its first snapshot or update
    attempt: 0,
    retryTimer: null,
    retryAt: 0,
    lastMessage: 0,
    lastData: 0,
    pingId: 0
  };

  // What we asked the server and still expect an answer to, oldest first. The
  // server answers each request in order (history, acked, pong or error), so an
  // error always belongs to the oldest outstanding request.
  var outbox = {
    inflight: [],           // [{type, id}]
    historyQueue: [],       // point ids still to ask history for
    tokens: SEND_BURST,
    refilled: 0,
    pausedUntil: 0
  };

  // -- small helpers ----------------------------------------------------------

  function $(id) { return document.getElementById(id); }

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = text;
    return node;
  }

  function splitId(id) {
    var parts = String(id).split('/');
    return { site: parts[0] || '', unit: parts[1] || '', point: parts.slice(2).join('/') || '' };
  }

  function unitKey(id) {
    var p = splitId(id);
    return p.site + '/' + p.unit;
  }

  function prettyName(name) {
    if (LABELS[name]) return LABELS[name];
    var words = String(name).replace(/[_.-]+/g, ' ').trim();
    return words ? words.charAt(0).toUpperCase() + words.slice(1) : String(name);
  }

  function isTemperature(unit) {
    return unit === DEG + 'C' || unit === 'degC' || unit === DEG + 'F' || unit === 'degF';
  }

  function isFahrenheit(unit) { return unit === DEG + 'F' || unit === 'degF'; }

  /** A value in the unit the viewer chose (only temperatures and temperature differences change). */
  function displayNumber(value, unit) {
    if (typeof value !== 'number') return value;
    if (unit === 'K') return state.tempUnit === 'F' ? value * 9 / 5 : value;
    if (!isTemperature(unit)) return value;
    var celsius = isFahrenheit(unit) ? (value - 32) * 5 / 9 : value;
    return state.tempUnit === 'F' ? celsius * 9 / 5 + 32 : celsius;
  }

  function displayUnit(unit) {
    if (unit === 'K') return state.tempUnit === 'F' ? DEG + 'F' : 'K';
    if (!isTemperature(unit)) return unit || '';
    return DEG + state.tempUnit;
  }

  /** One decimal (none from 1000 up, or for points that only ever carried whole numbers). */
  function formatNumber(v, whole) {
    if (typeof v !== 'number' || !isFinite(v)) return String(v);
    if (whole || Math.abs(v) >= 1000) return v.toFixed(0);
    return v.toFixed(1);
  }

  function formatValue(value, unit, id) {
    if (typeof value === 'boolean') {
      if (id !== undefined && FLAGS.indexOf(splitId(id).point) >= 0) return value ? 'YES' : 'NO';
      return value ? 'ON' : 'OFF';
    }
    if (typeof value === 'number') {
      var whole = id !== undefined && !isTemperature(unit) && unit !== 'K' && !state.fractional.has(id);
      return formatNumber(displayNumber(value, unit), whole);
    }
    if (value === null || value === undefined) return '\u2014';
    return String(value);
  }

  function formatAge(ms) {
    var s = ms / 1000;
    if (s < 1) return 'just now';
    if (s < 60) return Math.floor(s) + ' s ago';
    if (s < 3600) return Math.floor(s / 60) + ' min ago';
    return Math.floor(s / 3600) + ' h ago';
  }

  function formatClock(ts) {
    var d = new Date(ts * 1000);
    function two(n) { return n < 10 ? '0' + n : String(n); }
    return two(d.getHours()) + ':' + two(d.getMinutes()) + ':' + two(d.getSeconds());
  }

  function loadTempUnit() {
    try {
      return window.localStorage.getItem(TEMP_KEY) === 'F' ? 'F' : 'C';
    } catch (e) {
      return 'C';
    }
  }

  function saveTempUnit(unit) {
    try { window.localStorage.setItem(TEMP_KEY, unit); } catch (e) { /* private mode: not persisted */ }
  }

  function chartable(value) { return typeof value === 'number' || typeof value === 'boolean'; }

  /** A derived point named <base>.<suffix>, e.g. supply_temp.forecast_15m. */
  function derivedOf(name) {
    var dot = name.indexOf('.');
    return dot > 0 ? { base: name.slice(0, dot), suffix: name.slice(dot + 1) } : null;
  }

  // -- the connection ---------------------------------------------------------

  function socketUrl() {
    var url = new URL('ws', window.location.href);
    url.protocol = window.location.protocol === 'https:' ? 'wss:' : 'ws:';
    url.search = '';
    url.hash = '';
    if (state.epoch !== null && state.version !== null) {
      url.searchParams.set('since', String(state.version));
      url.searchParams.set('epoch', state.epoch);
      // Alarm transitions are never coalesced: ask for a replay of the ones we missed.
      if (state.alarmSeq !== null) url.searchParams.set('alarm_seq', String(state.alarmSeq));
    }
    return url.toString();
  }

  function connect() {
    clearTimeout(conn.retryTimer);
    conn.retryTimer = null;
    conn.gotState = false;
    outbox.inflight = [];
    outbox.historyQueue = [];
    outbox.tokens = SEND_BURST;
    outbox.pausedUntil = 0;
    var ws;
    try {
      ws = new WebSocket(socketUrl(), [SUBPROTOCOL]);
    } catch (e) {
      scheduleReconnect();
      return;
    }
    conn.ws = ws;
    setConnState(conn.everLive ? 'reconnecting' : 'connecting');
    ws.onopen = function () {
      if (conn.ws !== ws) return;
      conn.lastMessage = Date.now();
      // A pong proves the link even when a resume has nothing new to send.
      ping();
    };
    ws.onmessage = function (event) {
      if (conn.ws !== ws) return;
      conn.lastMessage = Date.now();
      var message;
      try {
        message = JSON.parse(event.data);
      } catch (e) {
        return;
      }
      if (message && typeof message === 'object') handleMessage(message);
    };
    ws.onclose = function () {
      if (conn.ws !== ws) return;
      conn.ws = null;
      scheduleReconnect();
    };
    ws.onerror = function () { /* a close event follows */ };
  }

  /** Exponential backoff with jitter: a random delay between half and all of base * 2^n, capped. */
  function scheduleReconnect() {
    if (conn.retryTimer !== null) return;
    var ceiling = Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * Math.pow(2, conn.attempt));
    var delay = ceiling / 2 + Math.random() * ceiling / 2;
    conn.attempt += 1;
    conn.retryAt = Date.now() + delay;
    conn.retryTimer = setTimeout(connect, delay);
    setConnState(conn.everLive ? 'reconnecting' : 'connecting');
  }

  /** Drop a connection we no longer trust and start over (with backoff). */
  function abandon() {
    var ws = conn.ws;
    conn.ws = null;
    if (ws) {
      ws.onclose = ws.onmessage = ws.onopen = ws.onerror = null;
      try { ws.close(); } catch (e) { /* already closing */ }
    }
    scheduleReconnect();
  }

  function refillTokens() {
    var now = Date.now();
    outbox.tokens = Math.min(SEND_BURST, outbox.tokens + (now - outbox.refilled) / 1000 * SEND_RATE);
    outbox.refilled = now;
  }

  /** Send a request the server answers; returns false when not connected. */
  function request(message, expect) {
    var ws = conn.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) return false;
    refillTokens();
    outbox.tokens -= 1;
    ws.send(JSON.stringify(message));
    outbox.inflight.push(expect);
    if (outbox.inflight.length > 500) outbox.inflight.shift();
    return true;
  }

  /** The oldest outstanding request: the one a reply or error answers. */
  function answered(type, id) {
    var list = outbox.inflight;
    if (type === null) return list.shift() || null;
    for (var i = 0; i < list.length; i++) {
      if (list[i].type === type && (id === undefined || list[i].id === id)) return list.splice(i, 1)[0];
    }
    return null;
  }

  function ping() {
    conn.pingId += 1;
    request({ type: 'ping', id: conn.pingId }, { type: 'ping', id: conn.pingId });
  }

  function setConnState(next) {
    conn.state = next;
    var box = $('conn');
    box.dataset.state = next;
    if (state.epoch) box.dataset.epoch = state.epoch;
    $('conn-label').textContent = next === 'live' ? 'Live' : next === 'connecting' ? 'Connecting' : 'Reconnecting';
    var offline = next !== 'live' && conn.everLive;
    document.body.classList.toggle('offline', offline);
    $('offline-banner').hidden = !offline;
    renderConnAge();
    Array.prototype.forEach.call(document.querySelectorAll('#alarm-list .ack'), function (button) {
      var id = button.closest('[data-alarm]').dataset.alarm;
      button.disabled = next !== 'live' || state.support.ack === false || state.pendingAcks.has(id);
    });
  }

  function renderConnAge() {
    var now = Date.now();
    var text = '';
    if (conn.state === 'live') {
      text = conn.lastData ? 'updated ' + formatAge(now - conn.lastData) : '';
    } else {
      var parts = [];
      if (conn.retryTimer !== null) {
        var wait = Math.max(0, Math.ceil((conn.retryAt - now) / 1000));
        parts.push(wait > 0 ? 'retry in ' + wait + ' s' : 'retrying');
      }
      if (conn.lastData) parts.push('last update ' + formatAge(now - conn.lastData));
      text = parts.join(' \u00b7 ');
    }
    $('conn-age').textContent = text;
  }

  // -- messages ---------------------------------------------------------------

  function handleMessage(m) {
    switch (m.type) {
      case 'snapshot': onSnapshot(m); break;
      case 'update': onUpdate(m); break;
      case 'history': answered('history', m.point); onHistory(m); pumpHistory(); break;
      case 'alarm': onAlarm(m); break;
      case 'alarms': onAlarmList(m); break;
      case 'acked': answered('ack', m.alarm); break; // the alarm transition carries the new state
      case 'pong': answered('ping'); break;
      case 'error': onError(m); break;
      default: break; // anything newer than this page
    }
    if (conn.state !== 'live') becameLive();
  }

  function becameLive() {
    conn.everLive = true;
    conn.attempt = 0;
    setConnState('live');
    renderAlarms();
  }

  function onSnapshot(m) {
    var points = m.points && typeof m.points === 'object' ? m.points : {};
    var first = !conn.gotState;
    conn.gotState = true;
    var newEpoch = typeof m.epoch === 'string' && m.epoch !== state.epoch;
    if (first || m.resync === true) {
      // The first snapshot of a connection is the whole state: replace ours.
      if (newEpoch) {
        // Another server lifetime: its charts, alarms and sequence numbers start afresh.
        state.series.clear();
        state.alarms.clear();
        state.alarmSeq = null;
      }
      state.points.clear();
      if (m.alarms === undefined && (state.support.alarms === null || newEpoch)) state.support.alarms = false;
    }
    if (typeof m.epoch === 'string') state.epoch = m.epoch;
    if (typeof m.version === 'number') state.version = m.version;
    mergePoints(points);
    if (Array.isArray(m.alarms)) replaceAlarms(m.alarms, m.alarm_seq);
    conn.lastData = Date.now();
    rebuild();
    requestHistory(Object.keys(points));
  }

  function onUpdate(m) {
    var first = !conn.gotState;
    conn.gotState = true;
    if (typeof m.epoch === 'string' && state.epoch !== null && m.epoch !== state.epoch) {
      // Versions of another epoch mean nothing here: start over from a snapshot.
      state.epoch = null;
      state.version = null;
      abandon();
      return;
    }
    if (typeof m.epoch === 'string') state.epoch = m.epoch;
    if (typeof m.version === 'number') state.version = m.version;
    var points = m.points && typeof m.points === 'object' ? m.points : {};
    var added = mergePoints(points);
    conn.lastData = Date.now();
    if (added) rebuild();
    if (first) {
      // Resumed: fill the gap in the charts from the server's history.
      requestHistory(Array.from(state.points.keys()));
    }
  }

  /** Store points, update their views, and extend their series; return whether a new point appeared. */
  function mergePoints(points) {
    var added = false;
    var ids = Object.keys(points);
    ids.forEach(function (id) {
      var p = points[id];
      if (!p || typeof p !== 'object') return;
      if (!state.points.has(id)) added = true;
      state.points.set(id, p);
      if (typeof p.value === 'number' && !Number.isInteger(p.value)) state.fractional.add(id);
      if (chartable(p.value) && typeof p.ts === 'number') appendSample(id, p.ts, p.value);
      updateView(id);
    });
    if (ids.length) {
      renderSummary();
      if (detail.id && points[detail.id]) renderDetailHead();
    }
    return added;
  }

  function appendSample(id, ts, value) {
    var s = state.series.get(id);
    if (!s) {
      s = [];
      state.series.set(id, s);
    }
    var last = s.length ? s[s.length - 1] : null;
    if (last && ts < last[0]) return;               // older than what we have: ignore
    if (last && ts === last[0]) s[s.length - 1] = [ts, value];
    else s.push([ts, value]);
    trimSeries(s);
    markDirty(id);
  }

  function trimSeries(s) {
    if (!s.length) return;
    var horizon = s[s.length - 1][0] - HISTORY_WINDOW_S;
    var drop = 0;
    while (drop < s.length && s[drop][0] < horizon) drop++;
    if (s.length - drop > MAX_SAMPLES) drop = s.length - MAX_SAMPLES;
    if (drop) s.splice(0, drop);
  }

  // -- history: paced, visible charts first -----------------------------------

  var KIND_PRIORITY = { row: 0, chip: 1, total: 2 };

  function requestHistory(ids) {
    if (state.support.history === false) return;
    // Only points drawn as a chart need their past: the big rows first, card by card.
    var wanted = ids.filter(function (id) {
      var v = views.get(id);
      var p = state.points.get(id);
      return v && v.canvas && p && chartable(p.value) && outbox.historyQueue.indexOf(id) < 0;
    });
    wanted.sort(function (a, b) {
      return KIND_PRIORITY[views.get(a).kind] - KIND_PRIORITY[views.get(b).kind] ||
        collator.compare(unitKey(a), unitKey(b)) || comparePoints(a, b);
    });
    wanted.forEach(function (id) { outbox.historyQueue.push(id); });
    pumpHistory();
  }

  /** Ask for the past of the charts in view (the detail chart first); the others wait until scrolled to. */
  function pumpHistory() {
    if (state.support.history === false) outbox.historyQueue = [];
    var queue = outbox.historyQueue;
    // How many charts in view still wait for their past (0 once they are all filled).
    var waiting = outbox.inflight.filter(function (r) { return r.type === 'history'; }).length;
    queue.forEach(function (id) { if (onScreen.has(id) || id === detail.id) waiting++; });
    document.body.dataset.historyPending = String(waiting);
    if (state.support.history === false || Date.now() < outbox.pausedUntil) return;
    refillTokens();
    while (queue.length && outbox.tokens >= 1) {
      var index = queue.indexOf(detail.id);
      if (index < 0) {
        for (var i = 0; i < queue.length; i++) {
          if (onScreen.has(queue[i])) { index = i; break; }
        }
      }
      if (index < 0) return;
      var id = queue.splice(index, 1)[0];
      if (!sendHistory(id)) {
        queue.unshift(id);
        return;
      }
    }
  }

  function sendHistory(id) {
    var now = Date.now() / 1000;
    var s = state.series.get(id);
    // The whole window, unless our series already reaches back that far:
    // then only the gap before the newest sample (the time we were away).
    var since = now - HISTORY_WINDOW_S;
    if (s && s.length > 1 && s[0][0] <= since + 5) since = s[s.length - 2][0];
    return request({ type: 'history', point: id, since: since }, { type: 'history', id: id });
  }

  function onHistory(m) {
    if (typeof m.point !== 'string' || !Array.isArray(m.samples)) return;
    var incoming = m.samples.filter(function (x) {
      return Array.isArray(x) && typeof x[0] === 'number' && chartable(x[1]);
    });
    if (!incoming.length) return;
    var s = state.series.get(m.point) || [];
    var merged = s.concat(incoming).sort(function (a, b) { return a[0] - b[0]; });
    var out = [];
    merged.forEach(function (x) {
      if (out.length && out[out.length - 1][0] === x[0]) out[out.length - 1] = x;
      else out.push(x);
    });
    trimSeries(out);
    state.series.set(m.point, out);
    markDirty(m.point);
  }

  // -- alarms -----------------------------------------------------------------

  function replaceAlarms(list, seq) {
    state.support.alarms = true;
    state.alarms.clear();
    list.forEach(function (alarm) {
      if (alarm && typeof alarm.id === 'string' && alarm.state !== 'normal') state.alarms.set(alarm.id, alarm);
    });
    state.alarmSeq = typeof seq === 'number' ? seq : null;
    state.pendingAcks.forEach(function (timer, id) {
      var a = state.alarms.get(id);
      if (!a || a.state === 'acknowledged') clearPendingAck(id);
    });
    renderAlarms();
  }

  /** The whole alarm list (sent on resume when a replay cannot reach back far enough). */
  function onAlarmList(m) {
    if (Array.isArray(m.alarms)) replaceAlarms(m.alarms, m.alarm_seq);
  }

  function onAlarm(m) {
    var alarm = m.alarm;
    if (!alarm || typeof alarm.id !== 'string') return;
    if (typeof m.seq === 'number') {
      if (state.alarmSeq !== null && m.seq <= state.alarmSeq) return; // already applied
      state.alarmSeq = m.seq;
    }
    state.support.alarms = true;
    if (alarm.state === 'normal') state.alarms.delete(alarm.id);
    else state.alarms.set(alarm.id, alarm);
    // An ack is done once the alarm is acknowledged or gone; until then the button waits.
    if (alarm.state === 'acknowledged' || alarm.state === 'normal') clearPendingAck(alarm.id);
    renderAlarms();
  }

  /** Errors answer our own requests; the page carries on without what is missing. */
  function onError(m) {
    var failed = answered(null);
    var code = m.error;
    if (code === 'rate_limited') {
      // Dropped by the server: ask again once the bucket has refilled.
      if (window.console && console.debug) console.debug('hvac-push: server error', code, m.detail);
      outbox.pausedUntil = Date.now() + RATE_LIMITED_PAUSE_MS;
      outbox.tokens = 0;
      if (failed && failed.type === 'history') outbox.historyQueue.unshift(failed.id);
      if (failed && failed.type === 'ack') clearPendingAck(failed.id);
      renderAlarms();
      return;
    }
    var unsupported = code === 'unknown_type' || code === 'unavailable' || code === 'forbidden';
    if (failed && failed.type === 'history' && unsupported) {
      state.support.history = false;
      outbox.historyQueue = [];
    } else if (failed && failed.type === 'ack') {
      if (unsupported) state.support.ack = false;
      clearPendingAck(failed.id);
      if (unsupported) state.pendingAcks.forEach(function (timer, id) { clearPendingAck(id); });
      renderAlarms();
    } else if (window.console && console.debug) {
      console.debug('hvac-push: server error', code, m.detail);
    }
  }

  function acknowledge(id) {
    if (state.pendingAcks.has(id) || state.support.ack === false) return;
    if (!request({ type: 'ack', alarm: id }, { type: 'ack', id: id })) return;
    state.pendingAcks.set(id, setTimeout(function () {
      state.pendingAcks.delete(id);
      renderAlarms();
    }, ACK_TIMEOUT_MS));
    renderAlarms();
  }

  function clearPendingAck(id) {
    var timer = state.pendingAcks.get(id);
    if (timer !== undefined) {
      clearTimeout(timer);
      state.pendingAcks.delete(id);
    }
  }

  // -- building the page ------------------------------------------------------
  //
  // Every point gets one view, whatever its kind:
  //   row   a measured point: name, sparkline, big value
  //   chip  a computed figure (COP, energy...): small label, value, mini sparkline
  //   note  a forecast of a row's point, shown under that row's name
  //   total a site total, in the strip above the cards

  var cards = new Map();   // unit key -> {card, rows, chips, badge, title, site}
  var views = new Map();   // point id -> {kind, el, num, uom, tag, canvas, notes}
  var dirty = new Set();   // point ids whose chart needs a redraw
  var frameQueued = false;
  var onScreen = new Set(); // charts in (or near) the viewport: only they are drawn
  var watcher = typeof IntersectionObserver === 'function' ? new IntersectionObserver(function (entries) {
    entries.forEach(function (entry) {
      var id = entry.target.dataset.point;
      if (entry.isIntersecting) {
        onScreen.add(id);
        markDirty(id);
      } else {
        onScreen.delete(id);
      }
    });
    pumpHistory();
  }, { rootMargin: '200px' }) : null;

  function pointRank(name) {
    var i = POINT_ORDER.indexOf(name);
    if (i >= 0) return i;
    i = CHIPS.indexOf(name);
    return i >= 0 ? 100 + i : 50;
  }

  function comparePoints(a, b) {
    var pa = splitId(a).point;
    var pb = splitId(b).point;
    return pointRank(pa) - pointRank(pb) || collator.compare(pa, pb);
  }

  /** What a point is drawn as, given the other point names of its unit. */
  function kindOf(id, names) {
    var parts = splitId(id);
    if (parts.unit === SITE_UNIT) return 'total';
    var d = derivedOf(parts.point);
    // A note needs a row to sit under: its base must be a measured point of the unit.
    if (d && names.has(d.base) && !derivedOf(d.base) && CHIPS.indexOf(d.base) < 0) return 'note';
    if (d || CHIPS.indexOf(parts.point) >= 0) return 'chip';
    return 'row';
  }

  /** Make the cards and views match the set of points; keep existing elements. */
  function rebuild() {
    var byUnit = new Map();
    var totals = [];
    state.points.forEach(function (_, id) {
      if (splitId(id).unit === SITE_UNIT) {
        totals.push(id);
        return;
      }
      var key = unitKey(id);
      if (!byUnit.has(key)) byUnit.set(key, []);
      byUnit.get(key).push(id);
    });
    var sites = new Set();
    byUnit.forEach(function (_, key) { sites.add(key.split('/')[0]); });
    totals.forEach(function (id) { sites.add(splitId(id).site); });

    // Remove what is gone.
    views.forEach(function (v, id) {
      if (!state.points.has(id)) dropView(id);
    });
    cards.forEach(function (c, key) {
      if (!byUnit.has(key)) {
        c.card.remove();
        cards.delete(key);
      }
    });

    var container = $('units');
    var keys = Array.from(byUnit.keys()).sort(collator.compare);
    keys.forEach(function (key, index) {
      var c = cards.get(key) || makeCard(key);
      c.site.textContent = sites.size > 1 ? key.split('/')[0] : '';
      if (container.children[index] !== c.card) container.insertBefore(c.card, container.children[index] || null);
      var ids = byUnit.get(key).sort(comparePoints);
      var names = new Set(ids.map(function (id) { return splitId(id).point; }));
      var rowIndex = 0;
      var chipIndex = 0;
      ids.forEach(function (id) {
        var kind = kindOf(id, names);
        var v = views.get(id);
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
      ids.forEach(function (id) {
        var v = views.get(id);
        if (v.kind !== 'note') return;
        var base = views.get(unitKey(id) + '/' + derivedOf(splitId(id).point).base);
        if (base && base.notes && v.el.parentNode !== base.notes) base.notes.appendChild(v.el);
      });
      c.chips.hidden = chipIndex === 0;
      ids.forEach(updateView);
      updateCard(key);
    });

    var strip = $('totals');
    totals.sort(comparePoints).forEach(function (id, i) {
      var v = views.get(id) || makeView(id, 'total');
      if (strip.children[i + 1] !== v.el) strip.insertBefore(v.el, strip.children[i + 1] || null);
      updateView(id);
    });
    strip.hidden = totals.length === 0;

    $('placeholder').hidden = keys.length > 0;
    $('site').textContent = sites.size === 1 ? Array.from(sites)[0] : '';
    renderSummary();
    renderAlarms();
    markAllDirty();
  }

  function dropView(id) {
    var v = views.get(id);
    if (!v) return;
    if (watcher && v.canvas) watcher.unobserve(v.el);
    onScreen.delete(id);
    v.el.remove();
    views.delete(id);
    if (!state.points.has(id)) state.series.delete(id);
  }

  function makeCard(key) {
    var unit = key.split('/').slice(1).join('/');
    var card = el('section', 'card');
    card.dataset.unit = key;
    var head = el('header', 'card-head');
    var title = el('h2', 'card-title', unit);
    var site = el('span', 'card-site');
    var badge = el('span', 'card-badge');
    badge.hidden = true;
    head.append(title, site, badge);
    var rows = el('div', 'card-points');
    var chips = el('div', 'card-chips');
    card.append(head, rows, chips);
    var c = { card: card, rows: rows, chips: chips, badge: badge, title: title, site: site };
    cards.set(key, c);
    return c;
  }

  function makeView(id, kind) {
    var name = splitId(id).point;
    var v = { kind: kind, el: null, num: el('span', 'num'), uom: el('span', 'uom'), tag: null, canvas: null, notes: null };
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
      var label = el('div', kind === 'row' ? 'pt-name' : 'chip-name', prettyName(name));
      v.tag = el('span', 'pt-tag');
      label.appendChild(v.tag);
      v.canvas = el('canvas', kind === 'row' ? 'spark' : 'spark mini');
      v.canvas.setAttribute('aria-hidden', 'true');
      var value = el('div', kind === 'row' ? 'pt-value' : 'chip-value');
      value.append(v.num, v.uom);
      if (kind === 'row') {
        var left = el('div', 'pt-label');
        v.notes = el('div', 'pt-notes');
        left.append(label, v.notes);
        v.el.append(left, v.canvas, value);
      } else {
        v.el.append(label, value, v.canvas);
      }
      v.el.addEventListener('click', function () { openDetail(id); });
      v.el.addEventListener('keydown', function (e) {
        if (e.key === 'Enter' || e.key === ' ') {
          e.preventDefault();
          openDetail(id);
        }
      });
      if (watcher) watcher.observe(v.el);
      else onScreen.add(id);
    }
    v.el.dataset.point = id;
    views.set(id, v);
    return v;
  }

  function updateView(id) {
    var v = views.get(id);
    var p = state.points.get(id);
    if (!v || !p) return;
    var status = STATUS_RANK[p.status] !== undefined ? p.status : 'ok';
    var e = v.el;
    e.dataset.status = status;
    e.dataset.version = String(p.version);
    e.dataset.value = JSON.stringify(p.value);
    e.dataset.kind = typeof p.value;
    var name = splitId(id).point;
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
      if (FLAGS.indexOf(name) >= 0) e.dataset.flag = String(p.value);
    } else {
      delete e.dataset.on;
      delete e.dataset.flag;
    }
    if (v.kind === 'row' || v.kind === 'chip') updateCard(unitKey(id));
  }

  /** Forecasts under their row: the 15-minute one, and the time to a limit when one is near. */
  function updateNote(v, name, p) {
    var suffix = derivedOf(name).suffix;
    var forecast = /^forecast_(\d+)m$/.exec(suffix);
    if (forecast) {
      v.label.textContent = 'in ' + forecast[1] + ' min ';
      v.num.textContent = formatValue(p.value, p.unit, undefined);
      v.uom.textContent = '';
      v.el.hidden = forecast[1] !== '15';
      v.el.dataset.note = 'forecast';
    } else if (suffix === 'minutes_to_limit' && typeof p.value === 'number') {
      v.label.textContent = p.value <= 0 ? 'past limit' : 'limit in ';
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

  function updateCard(key) {
    var c = cards.get(key);
    if (!c) return;
    var worst = 'ok';
    [c.rows, c.chips].forEach(function (box) {
      Array.prototype.forEach.call(box.children, function (node) {
        var status = node.dataset.status;
        if (STATUS_RANK[status] > STATUS_RANK[worst]) worst = status;
      });
    });
    c.card.dataset.status = worst;
    var count = 0;
    var severity = null;
    state.alarms.forEach(function (a) {
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

  function renderSummary() {
    var counts = { ok: 0, stale: 0, fault: 0 };
    state.points.forEach(function (p) {
      if (counts[p.status] !== undefined) counts[p.status] += 1;
    });
    var parts = [cards.size + (cards.size === 1 ? ' unit' : ' units'), state.points.size + ' points'];
    var box = $('summary');
    box.textContent = '';
    box.appendChild(el('span', 'sum', parts.join(' \u00b7 ')));
    if (counts.stale) box.appendChild(el('span', 'sum sum-stale', counts.stale + ' stale'));
    if (counts.fault) box.appendChild(el('span', 'sum sum-fault', counts.fault + ' fault'));
  }

  // -- the alarm list ---------------------------------------------------------

  function compareAlarms(a, b) {
    var ua = a.state === 'acknowledged' ? 1 : 0;
    var ub = b.state === 'acknowledged' ? 1 : 0;
    var sa = SEVERITY_RANK[a.severity] !== undefined ? SEVERITY_RANK[a.severity] : 9;
    var sb = SEVERITY_RANK[b.severity] !== undefined ? SEVERITY_RANK[b.severity] : 9;
    return ua - ub || sa - sb || (b.ts || 0) - (a.ts || 0) || collator.compare(a.id, b.id);
  }

  function alarmValue(alarm, field) {
    var x = alarm[field];
    if (x === undefined || x === null) return '';
    var p = state.points.get(alarm.point);
    var unit = p ? p.unit : '';
    if (typeof x === 'number') return formatNumber(displayNumber(x, unit)) + ' ' + displayUnit(unit);
    return formatValue(x, unit, alarm.point);
  }

  function renderAlarms() {
    var list = $('alarm-list');
    var alarms = Array.from(state.alarms.values()).sort(compareAlarms);
    list.textContent = '';
    alarms.forEach(function (a) {
      var li = el('li', 'alarm');
      li.dataset.alarm = a.id;
      li.dataset.state = a.state || 'active';
      li.dataset.severity = a.severity || 'warning';
      var head = el('div', 'alarm-head');
      head.append(
        el('span', 'sev', (a.severity || 'alarm').toUpperCase() + ' \u00b7 ' + (KIND_LABEL[a.kind] || a.kind || '')),
        el('span', 'alarm-state', STATE_LABEL[a.state] || a.state || '')
      );
      var where = splitId(a.point || '');
      var what = el('button', 'alarm-point', where.unit + ' \u00b7 ' + prettyName(where.point));
      what.type = 'button';
      what.title = 'Show the trend of ' + (a.point || '');
      what.addEventListener('click', function () { if (a.point) openDetail(a.point); });
      var text = a.message || ((KIND_LABEL[a.kind] || a.kind || 'Alarm') + ' on ' + (a.point || ''));
      var msg = el('div', 'alarm-msg', text);
      var facts = [];
      if (a.value !== undefined && a.value !== null) facts.push('value ' + alarmValue(a, 'value'));
      if (a.limit !== undefined && a.limit !== null) facts.push('limit ' + alarmValue(a, 'limit'));
      if (typeof a.ts === 'number') facts.push('since ' + formatClock(a.ts));
      var info = el('div', 'alarm-info', facts.join(' \u00b7 '));
      li.append(head, what, msg, info);
      if (a.state === 'active' || a.state === 'returned') {
        var button = el('button', 'ack');
        button.type = 'button';
        var pending = state.pendingAcks.has(a.id);
        button.textContent = pending ? 'Acknowledging\u2026' : 'Acknowledge';
        button.disabled = pending || state.support.ack === false || conn.state !== 'live';
        if (state.support.ack === false) button.title = 'This server does not accept acknowledgements from this page';
        button.addEventListener('click', function () { acknowledge(a.id); });
        li.appendChild(button);
      }
      list.appendChild(li);
    });
    var count = alarms.length;
    var unacked = alarms.filter(function (a) { return a.state !== 'acknowledged'; }).length;
    $('alarm-count').textContent = String(count);
    $('alarm-count').dataset.unacked = String(unacked);
    var empty = $('alarm-empty');
    empty.hidden = count > 0;
    empty.textContent = state.support.alarms === false ? 'Alarms are not available from this server' : 'No active alarms';
    $('alarms').dataset.count = String(count);
    cards.forEach(function (_, key) { updateCard(key); });
    var alarmed = new Set();
    state.alarms.forEach(function (a) { alarmed.add(a.point); });
    views.forEach(function (v, id) {
      if (alarmed.has(id)) v.el.dataset.alarmed = 'true';
      else delete v.el.dataset.alarmed;
    });
  }

  // -- charts -----------------------------------------------------------------

  function markDirty(id) {
    dirty.add(id);
    queueFrame();
  }

  function markAllDirty() {
    views.forEach(function (v, id) { if (v.canvas) dirty.add(id); });
    queueFrame();
  }

  function queueFrame() {
    if (frameQueued) return;
    frameQueued = true;
    window.requestAnimationFrame(drawFrame);
  }

  function drawFrame() {
    frameQueued = false;
    dirty.forEach(function (id) {
      var v = views.get(id);
      if (v && v.canvas && onScreen.has(id)) drawSpark(v.canvas, id);
    });
    if (detail.id && (dirty.has(detail.id) || detail.forced)) drawDetail();
    detail.forced = false;
    dirty.clear();
  }

  function css(name) {
    return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  }

  var palette = null;
  function colours() {
    if (!palette) {
      palette = {
        line: css('--chart-line') || '#4cc2ff',
        fill: css('--chart-fill') || 'rgba(76,194,255,0.15)',
        stale: css('--stale') || '#d29922',
        fault: css('--fault') || '#f85149',
        grid: css('--chart-grid') || 'rgba(255,255,255,0.08)',
        text: css('--muted') || '#8b98a5',
        on: css('--on') || '#4cc2ff',
        flag: css('--major') || '#ff9a1f'
      };
    }
    return palette;
  }

  /** Size the canvas backing store to its CSS box at the device pixel ratio; return a 2D context in CSS pixels. */
  function prepare(canvas) {
    var w = canvas.clientWidth;
    var h = canvas.clientHeight;
    if (!w || !h) return null;
    var ratio = window.devicePixelRatio || 1;
    var bw = Math.round(w * ratio);
    var bh = Math.round(h * ratio);
    if (canvas.width !== bw || canvas.height !== bh) {
      canvas.width = bw;
      canvas.height = bh;
    }
    var ctx = canvas.getContext('2d');
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, w, h);
    return { ctx: ctx, w: w, h: h };
  }

  function visible(series, t0) {
    // Keep one sample before the window so the line enters from the left edge.
    var i = series.length;
    while (i > 0 && series[i - 1][0] >= t0) i--;
    return series.slice(Math.max(0, i - 1));
  }

  function valueRange(samples, unit) {
    var lo = Infinity;
    var hi = -Infinity;
    samples.forEach(function (x) {
      var v = displayNumber(x[1], unit);
      if (v < lo) lo = v;
      if (v > hi) hi = v;
    });
    var span = hi - lo;
    var pad = span > 0 ? span * 0.12 : Math.max(Math.abs(hi) * 0.02, 0.5);
    return { lo: lo - pad, hi: hi + pad };
  }

  function lineColour(id) {
    var p = state.points.get(id);
    var c = colours();
    if (p && p.status === 'fault') return c.fault;
    if (p && p.status === 'stale') return c.stale;
    if (FLAGS.indexOf(splitId(id).point) >= 0) return c.flag;
    return c.line;
  }

  /** Plot a series into a box: a line with a soft fill for numbers, filled runs for on/off. */
  function plot(ctx, samples, unit, box, t0, t1, range, colour, fill) {
    var x = function (t) { return box.x + (t - t0) / (t1 - t0) * box.w; };
    var last = samples[samples.length - 1];
    if (typeof last[1] === 'boolean') {
      ctx.fillStyle = colour;
      ctx.globalAlpha = 0.55;
      // One rectangle per run of "on", from where it switched on to where it switched off.
      var runStart = null;
      for (var i = 0; i <= samples.length; i++) {
        var on = i < samples.length && samples[i][1] === true;
        if (on && runStart === null) runStart = samples[i][0];
        if (!on && runStart !== null) {
          var a = Math.max(box.x, x(runStart));
          var b = i < samples.length ? x(samples[i][0]) : box.x + box.w;
          if (b > a) ctx.fillRect(Math.round(a), Math.round(box.y + box.h * 0.2), Math.max(1, Math.round(b - a)), Math.round(box.h * 0.6));
          runStart = null;
        }
      }
      ctx.globalAlpha = 0.35;
      ctx.fillRect(box.x, Math.round(box.y + box.h * 0.8), box.w, 1);  // the "off" baseline
      ctx.globalAlpha = 1;
      return;
    }
    var nums = samples.filter(function (s) { return typeof s[1] === 'number'; });
    if (!nums.length) return;
    var y = function (v) { return box.y + box.h - (displayNumber(v, unit) - range.lo) / (range.hi - range.lo) * box.h; };
    var right = box.x + box.w;
    ctx.beginPath();
    nums.forEach(function (s, i) {
      var px = Math.max(box.x, x(s[0]));
      if (i === 0) ctx.moveTo(px, y(s[1]));
      else ctx.lineTo(px, y(s[1]));
    });
    var lastY = y(nums[nums.length - 1][1]);
    ctx.lineTo(right, lastY);  // the value holds until now
    ctx.strokeStyle = colour;
    ctx.lineWidth = 1.6;
    ctx.lineJoin = 'round';
    ctx.stroke();
    if (fill && nums.length > 1) {
      ctx.lineTo(right, box.y + box.h);
      ctx.lineTo(Math.max(box.x, x(nums[0][0])), box.y + box.h);
      ctx.closePath();
      ctx.fillStyle = fill;
      ctx.fill();
    }
    ctx.fillStyle = colour;
    ctx.beginPath();
    ctx.arc(Math.min(right - 2, x(nums[nums.length - 1][0])), lastY, 2.2, 0, Math.PI * 2);
    ctx.fill();
  }

  /** The time span to draw: up to C{window} seconds back from now, but no further
   * back than the oldest sample, so a young series fills the chart at once. */
  function timeRange(series, window) {
    var now = Date.now() / 1000;
    var t1 = series.length ? Math.max(now, series[series.length - 1][0]) : now;
    var oldest = series.length ? series[0][0] : t1;
    var t0 = Math.max(t1 - window, Math.min(oldest, t1 - MIN_SPAN_S));
    return { t0: t0, t1: t1 };
  }

  function drawSpark(canvas, id) {
    var g = prepare(canvas);
    if (!g) return;
    var series = state.series.get(id) || [];
    var p = state.points.get(id);
    if (!p || !series.length) return;
    var span = timeRange(series, SPARK_WINDOW_S);
    var samples = visible(series, span.t0);
    if (!samples.length) return;
    var box = { x: 1, y: 3, w: g.w - 4, h: g.h - 6 };
    var nums = samples.filter(function (s) { return typeof s[1] === 'number'; });
    var range = nums.length ? valueRange(nums, p.unit) : null;
    var colour = lineColour(id);
    plot(g.ctx, samples, p.unit, box, span.t0, span.t1, range, colour, colour === colours().line ? colours().fill : null);
  }

  // -- the detail view (a bigger chart for one point) --------------------------

  var detail = { id: null, forced: false };

  function openDetail(id) {
    if (!state.points.has(id)) return;
    detail.id = id;
    var dialog = $('detail');
    var parts = splitId(id);
    $('detail-title').textContent = parts.unit + ' \u00b7 ' + prettyName(parts.point);
    $('detail-id').textContent = id;
    renderDetailHead();
    if (!dialog.open) {
      if (typeof dialog.showModal === 'function') dialog.showModal();
      else dialog.setAttribute('open', '');
    }
    var p = state.points.get(id);
    var s = state.series.get(id);
    if (p && chartable(p.value) && (!s || s.length < 2) && outbox.historyQueue.indexOf(id) < 0) {
      outbox.historyQueue.unshift(id);
      pumpHistory();
    }
    detail.forced = true;
    queueFrame();
  }

  function closeDetail() {
    detail.id = null;
    var dialog = $('detail');
    if (dialog.open) {
      if (typeof dialog.close === 'function') dialog.close();
      else dialog.removeAttribute('open');
    }
  }

  function renderDetailHead() {
    var p = state.points.get(detail.id);
    if (!p) return;
    $('detail-num').textContent = formatValue(p.value, p.unit, detail.id);
    $('detail-uom').textContent = typeof p.value === 'number' ? displayUnit(p.unit) : '';
    $('detail').dataset.status = p.status;
    // Forecasts of this point, when the server computes them.
    var parts = [];
    state.points.forEach(function (f, fid) {
      var m = /^(.*)\.forecast_(\d+)m$/.exec(fid);
      if (m && m[1] === detail.id && typeof f.value === 'number') {
        parts.push([Number(m[2]), 'in ' + m[2] + ' min ' + formatNumber(displayNumber(f.value, f.unit)) + ' ' + displayUnit(f.unit)]);
      }
    });
    parts.sort(function (a, b) { return a[0] - b[0]; });
    $('detail-forecast').textContent = parts.length ? 'Forecast: ' + parts.map(function (x) { return x[1]; }).join(' \u00b7 ') : '';
  }

  function spanLabel(seconds) {
    return seconds >= 90 ? 'last ' + Math.round(seconds / 60) + ' min' : 'last ' + Math.round(seconds) + ' s';
  }

  function niceStep(span, count) {
    var raw = span / Math.max(1, count);
    var mag = Math.pow(10, Math.floor(Math.log10(raw)));
    var norm = raw / mag;
    var step = norm < 1.5 ? 1 : norm < 3 ? 2 : norm < 7 ? 5 : 10;
    return step * mag;
  }

  function drawDetail() {
    var id = detail.id;
    var p = state.points.get(id);
    var canvas = $('detail-chart');
    var g = prepare(canvas);
    if (!g || !p) return;
    var ctx = g.ctx;
    var c = colours();
    var series = state.series.get(id) || [];
    var span = timeRange(series, HISTORY_WINDOW_S);
    var t0 = span.t0;
    var t1 = span.t1;
    var samples = visible(series, t0);
    var box = { x: 56, y: 10, w: g.w - 70, h: g.h - 36 };
    ctx.font = '12px system-ui, sans-serif';
    ctx.fillStyle = c.text;
    ctx.strokeStyle = c.grid;
    ctx.lineWidth = 1;

    // Time axis: about six ticks at round times.
    var tickS = TIME_STEPS.filter(function (step) { return (t1 - t0) / step <= 7; })[0] || 3600;
    ctx.textAlign = 'center';
    ctx.textBaseline = 'top';
    for (var t = Math.ceil(t0 / tickS) * tickS; t <= t1; t += tickS) {
      var tx = box.x + (t - t0) / (t1 - t0) * box.w;
      ctx.beginPath();
      ctx.moveTo(Math.round(tx) + 0.5, box.y);
      ctx.lineTo(Math.round(tx) + 0.5, box.y + box.h);
      ctx.stroke();
      if (tx > box.x + 20) ctx.fillText(tickS < 60 ? formatClock(t) : formatClock(t).slice(0, 5), tx, box.y + box.h + 6);
    }

    var stats = $('detail-stats');
    if (!samples.length) {
      ctx.textAlign = 'center';
      ctx.textBaseline = 'middle';
      ctx.fillText('No samples yet', box.x + box.w / 2, box.y + box.h / 2);
      stats.textContent = '';
      return;
    }
    var nums = samples.filter(function (s) { return typeof s[1] === 'number'; });
    var range = null;
    if (nums.length && typeof samples[samples.length - 1][1] === 'number') {
      range = valueRange(nums, p.unit);
      var step = niceStep(range.hi - range.lo, 5);
      var decimals = Math.max(0, Math.min(4, -Math.floor(Math.log10(step) + 1e-9)));
      ctx.textAlign = 'right';
      ctx.textBaseline = 'middle';
      for (var v = Math.ceil(range.lo / step) * step; v <= range.hi; v += step) {
        var vy = box.y + box.h - (v - range.lo) / (range.hi - range.lo) * box.h;
        ctx.beginPath();
        ctx.moveTo(box.x, Math.round(vy) + 0.5);
        ctx.lineTo(box.x + box.w, Math.round(vy) + 0.5);
        ctx.stroke();
        ctx.fillText(v.toFixed(decimals), box.x - 8, vy);
      }
      var inWindow = nums.filter(function (s) { return s[0] >= t0; });
      var vals = (inWindow.length ? inWindow : nums).map(function (s) { return displayNumber(s[1], p.unit); });
      var min = Math.min.apply(null, vals);
      var max = Math.max.apply(null, vals);
      var mean = vals.reduce(function (a, b) { return a + b; }, 0) / vals.length;
      var u = displayUnit(p.unit);
      stats.textContent = spanLabel(t1 - t0) + ' \u00b7 min ' + formatNumber(min) + ' ' + u + ' \u00b7 mean ' +
        formatNumber(mean) + ' ' + u + ' \u00b7 max ' + formatNumber(max) + ' ' + u + ' \u00b7 ' + vals.length + ' samples';
    } else {
      var on = samples.filter(function (s) { return s[1] === true; }).length;
      stats.textContent = spanLabel(t1 - t0) + ' \u00b7 ' + samples.length + ' samples \u00b7 on in ' + on;
    }
    ctx.save();
    ctx.beginPath();
    ctx.rect(box.x, box.y - 4, box.w + 4, box.h + 8);
    ctx.clip();
    var colour = lineColour(id);
    plot(ctx, samples, p.unit, box, t0, t1, range, colour, colour === c.line ? c.fill : null);
    ctx.restore();
  }

  // -- temperature unit -------------------------------------------------------

  function applyTempUnit(unit) {
    state.tempUnit = unit === 'F' ? 'F' : 'C';
    $('temp-c').setAttribute('aria-pressed', String(state.tempUnit === 'C'));
    $('temp-f').setAttribute('aria-pressed', String(state.tempUnit === 'F'));
    document.documentElement.dataset.temp = state.tempUnit;
    views.forEach(function (_, id) { updateView(id); });
    renderAlarms();
    if (detail.id) renderDetailHead();
    detail.forced = true;
    markAllDirty();
  }

  // -- start ------------------------------------------------------------------

  function tick() {
    renderConnAge();
    pumpHistory();
    var now = Date.now();
    if (conn.ws && conn.ws.readyState === WebSocket.OPEN && now - conn.lastMessage > SILENCE_LIMIT_MS) abandon();
  }

  function start() {
    $('temp-c').addEventListener('click', function () { saveTempUnit('C'); applyTempUnit('C'); });
    $('temp-f').addEventListener('click', function () { saveTempUnit('F'); applyTempUnit('F'); });
    $('detail-close').addEventListener('click', closeDetail);
    $('detail').addEventListener('close', function () { detail.id = null; });
    $('detail').addEventListener('click', function (e) {
      if (e.target === $('detail')) closeDetail();  // a click on the backdrop
    });
    window.addEventListener('storage', function (e) {
      if (e.key === TEMP_KEY) applyTempUnit(loadTempUnit());
    });
    window.addEventListener('online', function () {
      if (conn.retryTimer !== null) connect();
    });
    window.addEventListener('resize', function () {
      detail.forced = true;
      markAllDirty();
    });
    outbox.refilled = Date.now();
    applyTempUnit(state.tempUnit);
    renderAlarms();
    renderSummary();
    setConnState('connecting');
    setInterval(tick, 250);
    setInterval(function () {
      // Time moves on even when values do not: scroll every chart once a second.
      detail.forced = true;
      markAllDirty();
    }, 1000);
    setInterval(function () {
      if (conn.ws && conn.ws.readyState === WebSocket.OPEN) ping();
    }, PING_EVERY_MS);
    connect();
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})();
