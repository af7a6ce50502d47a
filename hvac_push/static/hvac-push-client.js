/* hvac-push-client.js: a JavaScript client for hvac-push's WebSocket protocol
 * (docs/protocol.md), as one ES module with no dependencies. Any page served by
 * the server (or any page allowed by --allow-origin) can import it:
 *
 *   import { HvacPushClient } from '/static/hvac-push-client.js';
 *   const client = new HvacPushClient({ patterns: ['plant/+/supply_temp'] });
 *   client.on('change', (c) => console.log(c.points, client.mirror.points.get(c.points[0])));
 *   client.start();
 *
 * It keeps a local mirror (points, alarms, epoch, version, alarm_seq) of what the
 * client subscribes to, reconnects with exponential backoff and jitter, resumes
 * with since/epoch/alarm_seq (so nothing changed while away is missed), starts
 * over on a new epoch (a restarted server), and matches answers to requests by
 * their `id` when the server echoes one, else by type and order. The token, when
 * there is one, travels as a second WebSocket subprotocol (bearer.<token>), never
 * in a URL. No DOM: it works in a page or a worker.
 */

const SUBPROTOCOL = 'hvac-push.v1';
const TOKEN_PREFIX = 'bearer.';
const TOKEN_EXPIRED = 4001;
const DEFAULTS = {
  url: null,               // ws(s)://host/ws; default: ./ws next to the page
  token: null,
  patterns: null,          // null: everything the token may read
  cov: null,               // {deadband, min_interval_ms, max_interval_ms} for the opening patterns
  backoffBaseMs: 500,      // the first retry after 0.25-0.5 s ...
  backoffCapMs: 10000,     // ... doubling up to 5-10 s
  pingEveryMs: 10000,
  silenceLimitMs: 30000,   // nothing heard for this long: the link is dead, reconnect
  rate: 18,                // requests per second this client allows itself ...
  burst: 20,               // ... into a bucket this deep (inside the server's defaults, 20/s and 40)
  requestTimeoutMs: 15000,
  WebSocket: null          // a WebSocket constructor (the global one by default)
};
// Which answer types settle which request types when the server echoes no id.
const ANSWERS = {
  snapshot: ['subscribe'], acked: ['ack'], shelved: ['shelve', 'unshelve'], history: ['history'],
  pong: ['ping'], authenticated: ['auth'], out_of_service: ['out_of_service'], update: ['resume']
};

/** Whether point id C{id} matches pattern C{pattern} (+ one level, # the rest). */
export function matchPattern(pattern, id) {
  const p = String(pattern).split('/');
  const s = String(id).split('/');
  for (let i = 0; i < p.length; i++) {
    if (p[i] === '#') return true;
    if (i >= s.length) return false;
    if (p[i] !== '+' && p[i] !== s[i]) return false;
  }
  return p.length === s.length;
}

/** An error the server answered a request with ({type: "error", error, detail}). */
export class RequestError extends Error {
  constructor(code, detail, request) {
    super(code + (detail ? ': ' + detail : ''));
    this.code = code;
    this.detail = detail;
    this.request = request;
  }
}

export class HvacPushClient {
  constructor(options) {
    this.options = { ...DEFAULTS, ...(options || {}) };
    this.token = this.options.token;
    /** The local mirror: read it, never write it. */
    this.mirror = {
      points: new Map(),   // id -> {value, unit, ts, version, status}
      alarms: new Map(),   // alarm id -> alarm (never "normal")
      epoch: null,         // of the last snapshot or update applied: where a resume starts
      version: null,
      alarmSeq: null,
      lastData: 0          // Date.now() of the last snapshot or update
    };
    this.patterns = this.options.patterns ? Array.from(new Set(this.options.patterns)) : null;
    this.covRules = new Map();  // pattern -> rule
    if (this.options.cov && this.patterns) this.patterns.forEach((p) => this.covRules.set(p, this.options.cov));
    this.state = 'idle';        // idle | connecting | live | reconnecting | signed-out | closed
    this.everLive = false;
    this.attempt = 0;
    this.retryAt = null;
    this.ws = null;
    this.listeners = new Map();
    this.pending = [];          // requests awaiting an answer, oldest first
    this.nextId = 1;
    this.tokens = this.options.burst;
    this.refilled = Date.now();
    this.heldUntil = 0;
    this.retryTimer = null;
    this.gotState = false;
    this.lastMessage = 0;
    this.timers = [];
    this.refusals = 0;          // handshakes in a row that failed before opening (with a token)
    this.covered = new Set();   // patterns whose state the mirror holds: a resume may only cover these
  }

  // -- events ---------------------------------------------------------------------

  /**
   * C{fn} runs on C{event}: 'status' (state), 'change' ({points, added, removed,
   * snapshot, resync, first}), 'alarm' (alarm, seq), 'alarms' (list), 'message' (every
   * message), 'error' (an error answering nothing we asked), 'authfailed' (reason).
   * Returns a function that removes the listener.
   */
  on(event, fn) {
    if (!this.listeners.has(event)) this.listeners.set(event, new Set());
    this.listeners.get(event).add(fn);
    return () => this.listeners.get(event).delete(fn);
  }

  emit(event, ...args) {
    const set = this.listeners.get(event);
    if (!set) return;
    set.forEach((fn) => {
      try { fn(...args); } catch (e) { setTimeout(() => { throw e; }); }
    });
  }

  // -- connection -------------------------------------------------------------------

  /** Connect and keep connected until close(). */
  start() {
    if (this.timers.length) return this;
    this.timers.push(setInterval(() => this.watch(), 250));
    this.timers.push(setInterval(() => { if (this.isOpen()) this.ping().catch(() => {}); }, this.options.pingEveryMs));
    if (this.state !== 'signed-out') this.connect();
    return this;
  }

  /** Close for good: no reconnect; outstanding requests fail. */
  close() {
    this.timers.forEach(clearInterval);
    this.timers = [];
    clearTimeout(this.retryTimer);
    this.retryTimer = null;
    this.drop(1000);
    this.failPending('closed');
    this.setState('closed');
  }

  isOpen() {
    return this.ws !== null && this.ws.readyState === 1;
  }

  url() {
    let base = this.options.url;
    if (!base) {
      const here = new URL('ws', globalThis.location.href);
      here.protocol = globalThis.location.protocol === 'https:' ? 'wss:' : 'ws:';
      base = here.toString();
    }
    const url = new URL(base);
    url.search = '';
    url.hash = '';
    if (this.patterns) url.searchParams.set('points', this.patterns.join(','));
    const m = this.mirror;
    // A resume sends only what changed: it cannot bring the state of patterns we never had.
    const resumable = this.patterns === null ? this.covered.has('#') : this.patterns.every((p) => this.covered.has(p));
    if (m.epoch !== null && m.version !== null && resumable) {
      url.searchParams.set('since', String(m.version));
      url.searchParams.set('epoch', m.epoch);
      if (m.alarmSeq !== null) url.searchParams.set('alarm_seq', String(m.alarmSeq));
    }
    // The query is read raw by the server: keep + and , as they are (# must stay %23).
    return url.toString().replace(/%2B/g, '+').replace(/%2C/g, ',').replace(/%2F/g, '/');
  }

  connect() {
    clearTimeout(this.retryTimer);
    this.retryTimer = null;
    this.retryAt = null;
    if (this.patterns && this.patterns.length === 0) {
      // Subscribed to nothing: no connection needed until something is wanted.
      this.setState('idle');
      return;
    }
    const Ctor = this.options.WebSocket || globalThis.WebSocket;
    const protocols = this.token ? [SUBPROTOCOL, TOKEN_PREFIX + this.token] : [SUBPROTOCOL];
    this.gotState = false;
    this.failPending('reconnected');
    let ws;
    try {
      ws = new Ctor(this.url(), protocols);
    } catch (e) {
      if (this.token) this.authFailed('refused');
      else this.scheduleReconnect();
      return;
    }
    this.ws = ws;
    this.opened = false;
    this.setState(this.everLive ? 'reconnecting' : 'connecting');
    ws.onopen = () => {
      if (this.ws !== ws) return;
      this.opened = true;
      this.refusals = 0;
      this.lastMessage = Date.now();
      this.tokens = this.options.burst;
      this.refilled = Date.now();
      // COV rules go with a subscribe message (the handshake carries only patterns).
      this.covRules.forEach((rule, pattern) => this.send({ type: 'subscribe', points: [pattern], ...rule }, true));
      this.ping().catch(() => {});  // a pong proves the link even when a resume has nothing to send
    };
    ws.onmessage = (event) => {
      if (this.ws !== ws) return;
      this.lastMessage = Date.now();
      let m;
      try { m = JSON.parse(event.data); } catch (e) { return; }
      if (!m || typeof m !== 'object') return;
      this.handle(m);
      if (this.ws === ws && this.state !== 'live') {
        this.everLive = true;
        this.attempt = 0;
        this.setState('live');
      }
    };
    ws.onclose = (event) => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.failPending('disconnected');
      if (event.code === TOKEN_EXPIRED && this.token) this.authFailed('expired');
      else if (!this.opened && this.token && ++this.refusals >= 2) this.authFailed('refused');
      else this.scheduleReconnect();
    };
    ws.onerror = () => {};
  }

  drop(code) {
    const ws = this.ws;
    this.ws = null;
    if (!ws) return;
    ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
    try { ws.close(code || 1000); } catch (e) { /* closing already */ }
  }

  /** Give up this connection and start another (with backoff): it resumes where the mirror is. */
  reconnect() {
    this.drop(1000);
    this.scheduleReconnect();
  }

  scheduleReconnect() {
    if (this.retryTimer !== null || this.state === 'closed' || this.state === 'signed-out') return;
    const ceiling = Math.min(this.options.backoffCapMs, this.options.backoffBaseMs * Math.pow(2, this.attempt));
    const delay = ceiling / 2 + Math.random() * ceiling / 2;
    this.attempt += 1;
    this.retryAt = Date.now() + delay;
    this.retryTimer = setTimeout(() => this.connect(), delay);
    this.setState(this.everLive ? 'reconnecting' : 'connecting');
  }

  authFailed(reason) {
    this.token = null;
    this.refusals = 0;
    this.setState('signed-out');
    this.emit('authfailed', reason);
  }

  setState(next) {
    if (this.state === next) return;
    this.state = next;
    this.emit('status', next);
  }

  watch() {
    if (this.isOpen() && Date.now() - this.lastMessage > this.options.silenceLimitMs) this.reconnect();
    const now = Date.now();
    this.pending.slice().forEach((r) => {
      if (now - r.sent > this.options.requestTimeoutMs) this.settle(r, null, new RequestError('timeout', '', r.message));
    });
  }

  /** Use C{token} from the next connection on (connected and live: ask the server to take it now). */
  useToken(token) {
    if (this.isOpen() && this.state === 'live' && this.token) {
      return this.request({ type: 'auth', token }).then((answer) => { this.token = token; return answer; });
    }
    this.token = token;
    this.refusals = 0;
    this.attempt = 0;
    this.drop(1000);
    if (this.state === 'signed-out' || this.state === 'idle') this.state = 'connecting';
    if (this.timers.length) this.connect();
    return Promise.resolve(null);
  }

  /** Forget the token and close; start() or useToken() connects again. */
  signOut() {
    this.token = null;
    clearTimeout(this.retryTimer);
    this.retryTimer = null;
    this.drop(1000);
    this.setState('signed-out');
  }

  // -- messages -----------------------------------------------------------------------

  handle(m) {
    const request = this.answerOf(m);
    switch (m.type) {
      case 'snapshot': this.applySnapshot(m, request); break;
      case 'update': this.applyUpdate(m); break;
      case 'alarm': this.applyAlarm(m); break;
      case 'alarms':
        if (Array.isArray(m.alarms)) this.replaceAlarms(m.alarms, m.alarm_seq);
        break;
      default: break;
    }
    this.emit('message', m, request ? request.message : null);
    if (request) {
      if (m.type === 'error') this.settle(request, null, new RequestError(m.error, m.detail, request.message));
      else this.settle(request, m, null);
    } else if (m.type === 'error') {
      this.emit('error', new RequestError(m.error, m.detail, null));
    }
  }

  /** The outstanding request C{m} answers: by its echoed id, else the oldest of a type it answers. */
  answerOf(m) {
    if (m.id !== undefined && m.id !== null) {
      const byId = this.pending.find((r) => r.id === m.id);
      if (byId) return byId;
      if (m.type === 'error' || m.type === 'pong') return null;
    }
    if (m.type === 'error') return this.pending.find((r) => r.expectsAnswer) || null;
    const types = ANSWERS[m.type];
    if (!types) return null;
    if (m.type === 'snapshot' && !this.gotState) return null;   // the opening snapshot answers no request
    if (m.type === 'update' && !this.pending.some((r) => r.message.type === 'resume')) return null;
    return this.pending.find((r) => types.indexOf(r.message.type) >= 0 &&
      (m.type !== 'history' || r.message.point === m.point) &&
      (!['acked', 'shelved'].includes(m.type) || r.message.alarm === m.alarm)) || null;
  }

  settle(request, answer, error) {
    const i = this.pending.indexOf(request);
    if (i < 0) return;
    this.pending.splice(i, 1);
    if (error) request.reject(error);
    else request.resolve(answer);
  }

  failPending(reason) {
    const list = this.pending;
    this.pending = [];
    list.forEach((r) => r.reject(new RequestError(reason, '', r.message)));
  }

  pointsOf(m) { return m.points && typeof m.points === 'object' ? m.points : {}; }

  merge(points) {
    const changed = [];
    let added = false;
    Object.keys(points).forEach((id) => {
      const p = points[id];
      if (!p || typeof p !== 'object') return;
      if (!this.mirror.points.has(id)) added = true;
      this.mirror.points.set(id, p);
      changed.push(id);
    });
    return { changed, added };
  }

  applySnapshot(m, request) {
    const first = !this.gotState;
    this.gotState = true;
    const newEpoch = typeof m.epoch === 'string' && m.epoch !== this.mirror.epoch;
    let removed = [];
    if (first) this.covered = new Set(this.patterns === null ? ['#'] : this.patterns);
    if (first || m.resync === true) {
      // The whole state of the subscription: it replaces ours.
      removed = Array.from(this.mirror.points.keys()).filter((id) => !(id in this.pointsOf(m)));
      removed.forEach((id) => this.mirror.points.delete(id));
      if (newEpoch) {
        this.mirror.alarms.clear();
        this.mirror.alarmSeq = null;
      }
    }
    if (typeof m.epoch === 'string') this.mirror.epoch = m.epoch;
    if (typeof m.version === 'number' && (first || m.resync || this.mirror.version === null || m.version > this.mirror.version)) {
      this.mirror.version = m.version;
    }
    const merged = this.merge(this.pointsOf(m));
    if (Array.isArray(m.alarms)) this.replaceAlarms(m.alarms, m.alarm_seq);
    this.mirror.lastData = Date.now();
    this.emit('change', {
      points: merged.changed, added: merged.added, removed, snapshot: true,
      resync: m.resync === true || (first && newEpoch), first, subscribe: request !== null && request !== undefined
    });
  }

  applyUpdate(m) {
    const first = !this.gotState;
    this.gotState = true;
    if (typeof m.epoch === 'string' && this.mirror.epoch !== null && m.epoch !== this.mirror.epoch) {
      // Another server lifetime: these versions mean nothing here. Start over with a snapshot.
      this.mirror.epoch = null;
      this.mirror.version = null;
      this.reconnect();
      return;
    }
    if (first) this.covered = new Set(this.patterns === null ? ['#'] : this.patterns);
    if (typeof m.epoch === 'string') this.mirror.epoch = m.epoch;
    if (typeof m.version === 'number') this.mirror.version = m.version;
    const merged = this.merge(this.pointsOf(m));
    this.mirror.lastData = Date.now();
    this.emit('change', { points: merged.changed, added: merged.added, removed: [], snapshot: false, resync: false, first });
  }

  applyAlarm(m) {
    const alarm = m.alarm;
    if (!alarm || typeof alarm.id !== 'string') return;
    if (typeof m.seq === 'number') {
      if (this.mirror.alarmSeq !== null && m.seq <= this.mirror.alarmSeq) return;  // already applied
      this.mirror.alarmSeq = m.seq;
    }
    if (alarm.state === 'normal') this.mirror.alarms.delete(alarm.id);
    else this.mirror.alarms.set(alarm.id, alarm);
    this.emit('alarm', alarm, m.seq);
  }

  replaceAlarms(list, seq) {
    this.mirror.alarms.clear();
    list.forEach((a) => {
      if (a && typeof a.id === 'string' && a.state !== 'normal') this.mirror.alarms.set(a.id, a);
    });
    this.mirror.alarmSeq = typeof seq === 'number' ? seq : null;
    this.emit('alarms', Array.from(this.mirror.alarms.values()));
  }

  // -- requests -----------------------------------------------------------------------

  refill() {
    const now = Date.now();
    this.tokens = Math.min(this.options.burst, this.tokens + (now - this.refilled) / 1000 * this.options.rate);
    this.refilled = now;
  }

  /** Whether a request that can wait (history) may go now without overrunning the server's rate limit. */
  maySend() {
    if (!this.isOpen() || Date.now() < this.heldUntil) return false;
    this.refill();
    return this.tokens >= 1;
  }

  /** Send nothing that can wait for C{ms} (the server said rate_limited). */
  hold(ms) {
    this.heldUntil = Date.now() + ms;
    this.tokens = 0;
  }

  send(message, withId) {
    if (!this.isOpen()) return null;
    this.refill();
    this.tokens -= 1;
    const out = withId ? { ...message, id: message.id !== undefined ? message.id : 'r' + this.nextId++ } : message;
    this.ws.send(JSON.stringify(out));
    return out;
  }

  /**
   * Send C{message} with an id; the promise gets its answer (snapshot, history,
   * acked, shelved, pong...), or fails with a L{RequestError} (the server's error,
   * 'disconnected', 'timeout', 'not_connected').
   */
  request(message) {
    return new Promise((resolve, reject) => {
      const sent = this.send(message, true);
      if (sent === null) {
        reject(new RequestError('not_connected', '', message));
        return;
      }
      this.pending.push({ id: sent.id, message: sent, resolve, reject, sent: Date.now(), expectsAnswer: true });
    });
  }

  ping() { return this.request({ type: 'ping' }); }

  /** Add C{patterns} (with an optional COV rule); resolves with the snapshot of the points they add. */
  subscribe(patterns, cov) {
    const fresh = patterns.filter((p) => !this.patterns || this.patterns.indexOf(p) < 0 || cov);
    if (this.patterns === null) this.patterns = [];
    fresh.forEach((p) => { if (this.patterns.indexOf(p) < 0) this.patterns.push(p); });
    if (cov) fresh.forEach((p) => this.covRules.set(p, cov));
    if (!fresh.length) return Promise.resolve(null);
    if (!this.isOpen()) {
      // Not connected (or still shaking hands with the old patterns): the next handshake carries them.
      this.restartHandshake();
      return Promise.resolve(null);
    }
    const message = { type: 'subscribe', points: fresh, ...(cov || {}) };
    return this.request(message).then((answer) => {
      fresh.forEach((p) => this.covered.add(p));
      return this.refreshAlarms().then(() => answer, () => answer);
    });
  }

  /** Drop C{patterns} (as subscribed); their points leave the mirror unless another pattern keeps them. */
  unsubscribe(patterns) {
    if (this.patterns === null) return Promise.resolve(null);
    const known = patterns.filter((p) => this.patterns.indexOf(p) >= 0);
    if (!known.length) return Promise.resolve(null);
    this.patterns = this.patterns.filter((p) => known.indexOf(p) < 0);
    known.forEach((p) => this.covRules.delete(p));
    const removed = [];
    this.mirror.points.forEach((_, id) => {
      if (!this.patterns.some((p) => matchPattern(p, id))) removed.push(id);
    });
    removed.forEach((id) => this.mirror.points.delete(id));
    this.mirror.alarms.forEach((a, key) => {
      if (typeof a.point === 'string' && !this.patterns.some((p) => matchPattern(p, a.point))) this.mirror.alarms.delete(key);
    });
    if (removed.length) this.emit('change', { points: [], added: false, removed, snapshot: false, resync: false, first: false });
    known.forEach((p) => this.covered.delete(p));
    if (this.isOpen()) this.send({ type: 'unsubscribe', points: known }, true);
    else this.restartHandshake();
    if (this.patterns.length === 0) {
      this.drop(1000);
      clearTimeout(this.retryTimer);
      this.retryTimer = null;
      if (this.state !== 'signed-out' && this.state !== 'closed') this.setState('idle');
    }
    return Promise.resolve(null);
  }

  /** A handshake under way carries old patterns: start it again (now, or when the backoff says). */
  restartHandshake() {
    if (!this.timers.length || this.state === 'signed-out' || this.state === 'closed') return;
    if (this.ws && !this.isOpen()) this.drop(1000);
    if (!this.ws && this.retryTimer === null) this.connect();
  }

  /** Subscribe to exactly C{patterns}: add the new ones, then drop the others. */
  setPatterns(patterns) {
    const want = Array.from(new Set(patterns));
    const had = this.patterns || [];
    const add = want.filter((p) => had.indexOf(p) < 0);
    const drop = this.patterns === null ? [] : had.filter((p) => want.indexOf(p) < 0);
    if (this.patterns === null && this.isOpen()) {
      // Subscribed to everything by default: narrowing needs a connection with the new patterns.
      this.patterns = want;
      this.mirror.epoch = null;
      this.mirror.version = null;
      this.reconnect();
      return Promise.resolve(null);
    }
    const done = add.length ? this.subscribe(add) : Promise.resolve(null);
    if (drop.length) this.unsubscribe(drop);
    if (this.patterns === null) this.patterns = want;
    return done;
  }

  /**
   * The alarm list of the current subscription again: a resume from the current
   * version without alarm_seq answers with an (empty) update and the whole list.
   */
  refreshAlarms() {
    const m = this.mirror;
    if (m.epoch === null || m.version === null || !this.isOpen()) return Promise.resolve(null);
    return this.request({ type: 'resume', since: m.version, epoch: m.epoch });
  }

  history(point, since) { return this.request({ type: 'history', point, since }); }

  ack(alarm, comment) {
    const message = { type: 'ack', alarm };
    if (comment) message.comment = comment;
    return this.request(message);
  }

  shelve(alarm, minutes, comment) {
    const message = { type: 'shelve', alarm, minutes };
    if (comment) message.comment = comment;
    return this.request(message);
  }

  unshelve(alarm, comment) {
    const message = { type: 'unshelve', alarm };
    if (comment) message.comment = comment;
    return this.request(message);
  }
}
