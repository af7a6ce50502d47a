/* The server's terms for a client: its message rate and burst, sizes, and how far
 * back its history reaches. They are read from ./client-limits.json when the page
 * starts, so the page never copies the server's constants; if that fails (an
 * older server, the files served from elsewhere), it keeps the defaults below,
 * which are the server's own defaults.
 */

const FETCH_TIMEOUT_MS = 3000;
// Send at 90 % of the server's rate, so its bucket slowly refills while we send...
const RATE_MARGIN = 0.9;
// ... and burst at most half of its burst. The server counts messages when it reads them:
// when the network or a busy machine delays some and delivers them together with later
// ones, the half we keep back absorbs about a second of such bunching.
const BURST_SHARE = 0.5;

/** The server's defaults: used until (and unless) the server says otherwise. */
const FALLBACK = Object.freeze({
  client_rate: 20,           // messages per second (0: the server does not limit them)
  client_burst: 40,          // ... into a bucket this deep
  max_message_size: 65536,   // bytes
  max_subscriptions: 256,
  history_window: 900,       // seconds of samples the server keeps per point
  history_max_samples: 2000, // ... and at most this many
  auth_required: false       // whether the WebSocket needs a token (signin.js)
});

/** The terms in force: the fallback, then what the server served. */
export const terms = { ...FALLBACK, source: 'fallback' };

function positive(x) { return typeof x === 'number' && isFinite(x) && x > 0; }

function accept(served) {
  if (!served || typeof served !== 'object') return false;
  const unlimited = served.client_rate === 0;  // then the burst means nothing (and may be 0)
  if (!unlimited && !(positive(served.client_rate) && positive(served.client_burst))) return false;
  terms.client_rate = served.client_rate;
  terms.client_burst = typeof served.client_burst === 'number' ? served.client_burst : 0;
  if (positive(served.max_message_size)) terms.max_message_size = served.max_message_size;
  if (positive(served.max_subscriptions)) terms.max_subscriptions = served.max_subscriptions;
  // No history (null) or none kept (0): the page still keeps its own live samples for the window.
  if (positive(served.history_window)) terms.history_window = served.history_window;
  if (positive(served.history_max_samples)) terms.history_max_samples = served.history_max_samples;
  terms.auth_required = served.auth_required === true;
  terms.source = 'server';
  return true;
}

/** How fast the page itself sends: inside the server's bucket (its fallback pace when the server sets none). */
export function sendPace() {
  const rate = terms.client_rate > 0 ? terms.client_rate : FALLBACK.client_rate;
  const burst = terms.client_rate > 0 ? terms.client_burst : FALLBACK.client_burst;
  return { rate: rate * RATE_MARGIN, burst: Math.max(1, Math.floor(burst * BURST_SHARE)) };
}

/** Shown on <html> as data attributes: what the page loaded, for people and tests to read. */
function publish() {
  const data = document.documentElement.dataset;
  const pace = sendPace();
  data.terms = terms.source;
  data.clientRate = String(terms.client_rate);
  data.clientBurst = String(terms.client_burst);
  data.sendRate = String(pace.rate);
  data.sendBurst = String(pace.burst);
  data.historyWindow = String(terms.history_window);
  data.authRequired = String(terms.auth_required);
}

/** Read the server's terms; never fails (the fallback stays in force). */
export async function loadTerms() {
  const abort = typeof AbortController === 'function' ? new AbortController() : null;
  const timer = abort ? setTimeout(() => abort.abort(), FETCH_TIMEOUT_MS) : null;
  try {
    const response = await fetch('client-limits.json', {
      cache: 'no-store', credentials: 'same-origin', signal: abort ? abort.signal : undefined
    });
    if (response.ok && !accept(await response.json()) && window.console && console.debug) {
      console.debug('hvac-push: client-limits.json not understood; using the defaults');
    }
  } catch (e) {
    /* unreachable or not JSON: the defaults stay */
  } finally {
    clearTimeout(timer);
  }
  publish();
  return terms;
}
