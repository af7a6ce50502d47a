/* The one WebSocket to ./ws: connecting, reconnecting with backoff and jitter,
 * resuming with since/epoch/alarm_seq, pings and the silence watchdog, and the
 * requests the page sends, paced inside the server's rate limit (terms.js) and
 * matched with their answers. It knows nothing of what the messages mean:
 * app.js gets them through the handlers given to startSocket.
 *
 * With a token (signin.js) it offers it as a second subprotocol, bearer.<token>,
 * never in the URL (URLs end up in access logs). A close with 4001 (expired) or a
 * handshake refused while the server is reachable ends the session: no retries
 * with a token the server will not take, onAuthFailed says why.
 */

import { mirror } from './state.js';
import { sendPace } from './terms.js';

const SUBPROTOCOL = 'hvac-push.v1';  // the protocol version this page speaks
const BACKOFF_BASE_MS = 500;          // first retry after 0.25-0.5 s ...
const BACKOFF_CAP_MS = 10000;         // ... doubling up to 5-10 s
const PING_EVERY_MS = 10000;
const SILENCE_LIMIT_MS = 30000;       // no message for this long: assume the link is dead
const MAX_INFLIGHT = 500;
const TOKEN_PROTOCOL_PREFIX = 'bearer.';  // hvac_push.transport.auth.TOKEN_SUBPROTOCOL_PREFIX
const TOKEN_EXPIRED = 4001;               // the server's close code at the token's exp
const REFUSALS_BEFORE_CHECK = 2;          // failed handshakes in a row before asking why

const conn = {
  ws: null,
  state: 'connecting',    // connecting | live | reconnecting | signed-out
  everLive: false,
  gotState: false,        // this connection has had its first snapshot or update
  attempt: 0,
  retryTimer: null,
  retryAt: 0,
  lastMessage: 0,
  pingId: 0,
  refusals: 0             // handshakes in a row that failed before the socket opened
};

// The token to offer, and whether the server needs one (client-limits.json says so).
const auth = { token: null, required: false };

// What we asked the server and still expect an answer to, oldest first. The
// server answers each request in order (history, acked, pong or error), so an
// error always belongs to the oldest outstanding request.
const outbox = {
  inflight: [],           // [{type, id}]
  pace: sendPace(),       // {rate, burst}: our own token bucket, inside the server's
  tokens: 0,
  refilled: 0,
  pausedUntil: 0
};

let handlers = { onConnect() {}, onMessage() {}, onStatus() {}, onAuthFailed() {} };

export function connectionState() { return conn.state; }
export function hasBeenLive() { return conn.everLive; }
/** When the next attempt is due (null when none is scheduled). */
export function retryDueAt() { return conn.retryTimer !== null ? conn.retryAt : null; }

/** True once per connection: for its first snapshot or update, which is the whole state or the resume. */
export function firstState() {
  const first = !conn.gotState;
  conn.gotState = true;
  return first;
}

function socketUrl() {
  const url = new URL('ws', window.location.href);
  url.protocol = window.location.protocol === 'https:' ? 'wss:' : 'ws:';
  url.search = '';
  url.hash = '';
  if (mirror.epoch !== null && mirror.version !== null) {
    url.searchParams.set('since', String(mirror.version));
    url.searchParams.set('epoch', mirror.epoch);
    // Alarm transitions are never coalesced: ask for a replay of the ones we missed.
    if (mirror.alarmSeq !== null) url.searchParams.set('alarm_seq', String(mirror.alarmSeq));
  }
  return url.toString();
}

function protocols() {
  return auth.token ? [SUBPROTOCOL, TOKEN_PROTOCOL_PREFIX + auth.token] : [SUBPROTOCOL];
}

function connect() {
  clearTimeout(conn.retryTimer);
  conn.retryTimer = null;
  if (auth.required && !auth.token) {
    setState('signed-out');
    return;
  }
  conn.gotState = false;
  outbox.inflight = [];
  outbox.pace = sendPace();
  outbox.tokens = outbox.pace.burst;
  outbox.refilled = Date.now();
  outbox.pausedUntil = 0;
  handlers.onConnect();
  let ws;
  let opened = false;
  try {
    ws = new WebSocket(socketUrl(), protocols());
  } catch (e) {
    // A token with characters no subprotocol may hold cannot be offered at all.
    if (auth.token) {
      authFailed('refused');
      return;
    }
    scheduleReconnect();
    return;
  }
  conn.ws = ws;
  setState(conn.everLive ? 'reconnecting' : 'connecting');
  ws.onopen = () => {
    if (conn.ws !== ws) return;
    opened = true;
    conn.refusals = 0;
    conn.lastMessage = Date.now();
    // A pong proves the link even when a resume has nothing new to send.
    ping();
  };
  ws.onmessage = (event) => {
    if (conn.ws !== ws) return;
    conn.lastMessage = Date.now();
    let message;
    try {
      message = JSON.parse(event.data);
    } catch (e) {
      return;
    }
    if (!message || typeof message !== 'object') return;
    handlers.onMessage(message);
    // Any message proves the link (unless handling it made us give this connection up).
    if (conn.ws === ws && conn.state !== 'live') becameLive();
  };
  ws.onclose = (event) => {
    if (conn.ws !== ws) return;
    conn.ws = null;
    if (event.code === TOKEN_EXPIRED && auth.token) {
      authFailed('expired');
    } else if (!opened && auth.token && ++conn.refusals >= REFUSALS_BEFORE_CHECK) {
      checkRefusal();
    } else {
      scheduleReconnect();
    }
  };
  ws.onerror = () => { /* a close event follows */ };
}

/** The token is no good: forget it, stop retrying, and say why (C{reason}: expired | refused). */
function authFailed(reason) {
  auth.token = null;
  conn.refusals = 0;
  setState('signed-out');
  handlers.onAuthFailed(reason);
}

/**
 * Handshakes with a token keep failing. A browser never sees the HTTP 401, so ask
 * the server something that needs no token: if it answers, it is up and it is the
 * token it refuses; if not, the server is down and we keep retrying.
 */
async function checkRefusal() {
  const token = auth.token;
  let reachable = false;
  try {
    const response = await fetch('client-limits.json', { cache: 'no-store', credentials: 'same-origin' });
    reachable = response.ok;
  } catch (e) {
    reachable = false;
  }
  if (auth.token !== token || conn.ws !== null || conn.state === 'signed-out') return;  // signed out or in again meanwhile
  if (reachable) {
    authFailed('refused');
  } else {
    scheduleReconnect();
  }
}

function becameLive() {
  conn.everLive = true;
  conn.attempt = 0;
  setState('live');
}

function setState(next) {
  conn.state = next;
  handlers.onStatus(next);
}

/** Exponential backoff with jitter: a random delay between half and all of base * 2^n, capped. */
function scheduleReconnect() {
  if (conn.retryTimer !== null || conn.state === 'signed-out') return;
  const ceiling = Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * Math.pow(2, conn.attempt));
  const delay = ceiling / 2 + Math.random() * ceiling / 2;
  conn.attempt += 1;
  conn.retryAt = Date.now() + delay;
  conn.retryTimer = setTimeout(connect, delay);
  setState(conn.everLive ? 'reconnecting' : 'connecting');
}

/** Drop a connection we no longer trust and start over (with backoff). */
export function abandon() {
  const ws = conn.ws;
  conn.ws = null;
  if (ws) {
    ws.onclose = ws.onmessage = ws.onopen = ws.onerror = null;
    try { ws.close(); } catch (e) { /* already closing */ }
  }
  scheduleReconnect();
}

function isOpen() { return conn.ws !== null && conn.ws.readyState === WebSocket.OPEN; }

// -- requests -------------------------------------------------------------------

function refillTokens() {
  const now = Date.now();
  outbox.tokens = Math.min(outbox.pace.burst, outbox.tokens + (now - outbox.refilled) / 1000 * outbox.pace.rate);
  outbox.refilled = now;
}

/** Send a request the server answers; returns false when not connected. */
export function request(message, expect) {
  if (!isOpen()) return false;
  refillTokens();
  outbox.tokens -= 1;
  conn.ws.send(JSON.stringify(message));
  outbox.inflight.push(expect);
  if (outbox.inflight.length > MAX_INFLIGHT) outbox.inflight.shift();
  return true;
}

/** Whether a request that can wait (history) may go now without overrunning the server's bucket. */
export function maySend() {
  if (Date.now() < outbox.pausedUntil) return false;
  refillTokens();
  return outbox.tokens >= 1;
}

/** The server refused a request (rate_limited): send nothing that can wait for C{ms}. */
export function holdRequests(ms) {
  outbox.pausedUntil = Date.now() + ms;
  outbox.tokens = 0;
}

/** The oldest outstanding request (of C{type}, and C{id} when given): the one a reply or error answers. */
export function answered(type, id) {
  const list = outbox.inflight;
  if (type === null) return list.shift() || null;
  for (let i = 0; i < list.length; i++) {
    if (list[i].type === type && (id === undefined || list[i].id === id)) return list.splice(i, 1)[0];
  }
  return null;
}

export function outstanding(type) {
  return outbox.inflight.filter((r) => r.type === type).length;
}

function ping() {
  conn.pingId += 1;
  request({ type: 'ping', id: conn.pingId }, { type: 'ping', id: conn.pingId });
}

// -- the token ------------------------------------------------------------------

/** Whether the server needs a token (client-limits.json), before startSocket. */
export function requireToken(required) { auth.required = required === true; }
export function tokenRequired() { return auth.required; }
/** The token in use (null without one): for the page's HTTP requests to the same server. */
export function currentToken() { return auth.token; }

/**
 * Use C{token} from now on. Connected: ask the server to refresh this connection's
 * grant ({"type":"auth"}; the answer comes through onMessage) and return 'refresh';
 * the token is kept for later connections only once accepted (C{setToken}).
 * Otherwise connect with it now and return 'connect'.
 */
export function useToken(token) {
  if (isOpen() && conn.state === 'live' && auth.token) {
    request({ type: 'auth', token }, { type: 'auth', token });
    return 'refresh';
  }
  auth.token = token;
  conn.refusals = 0;
  conn.attempt = 0;
  const ws = conn.ws;
  conn.ws = null;
  if (ws) {
    ws.onclose = ws.onmessage = ws.onopen = ws.onerror = null;
    try { ws.close(); } catch (e) { /* already closing */ }
  }
  connect();
  return 'connect';
}

/** The token to offer from the next connection on (the first one, or a refreshed one the server took). */
export function setToken(token) { auth.token = token; }

/** Forget the token and close the connection; nothing reconnects until a token is given. */
export function signOut() {
  auth.token = null;
  clearTimeout(conn.retryTimer);
  conn.retryTimer = null;
  const ws = conn.ws;
  conn.ws = null;
  if (ws) {
    ws.onclose = ws.onmessage = ws.onopen = ws.onerror = null;
    try { ws.close(1000, 'signed out'); } catch (e) { /* already closing */ }
  }
  setState(auth.required ? 'signed-out' : conn.state);
  if (!auth.required) connect();
}

// -- start ----------------------------------------------------------------------

/** Connect, and keep connected; C{given}: {onConnect(), onMessage(message), onStatus(state), onAuthFailed(reason)}. */
export function startSocket(given) {
  handlers = { ...handlers, ...given };
  window.addEventListener('online', () => {
    if (conn.retryTimer !== null) connect();
  });
  setInterval(() => {
    if (isOpen() && Date.now() - conn.lastMessage > SILENCE_LIMIT_MS) abandon();
  }, 250);
  setInterval(() => {
    if (isOpen()) ping();
  }, PING_EVERY_MS);
  connect();
}
