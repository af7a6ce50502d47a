/* The page's one connection to the server: an HvacPushClient (hvac-push-client.js,
 * the same module any other page can import) that reconnects, resumes and keeps
 * the mirror. This module adapts it to the page: its pace inside the server's
 * rate limit (terms.js), the token from signin.js, and the connection state the
 * header shows. The views say what they show (setPatterns) and the client
 * subscribes to exactly that.
 */

import { HvacPushClient } from './hvac-push-client.js';
import { sendPace } from './terms.js';

/** The page's client; subscribed to nothing until a view says what it shows. */
export const client = new HvacPushClient({ patterns: [] });

// Whether the server needs a token (client-limits.json says so).
const auth = { required: false };
let handlers = { onStatus() {}, onAuthFailed() {}, onRefreshAccepted() {}, onRefreshRefused() {} };

export function connectionState() {
  const s = client.state;
  if (s === 'idle') return client.everLive ? 'live' : 'connecting';
  return s === 'closed' ? 'reconnecting' : s;
}
export function hasBeenLive() { return client.everLive; }
/** When the next attempt is due (null when none is scheduled). */
export function retryDueAt() { return client.retryTimer !== null ? client.retryAt : null; }

/** Send a request the server answers: a promise of its answer (or a RequestError). */
export function request(message) { return client.request(message); }
export function maySend() { return client.maySend(); }
export function holdRequests(ms) { client.hold(ms); }

/** Subscribe to exactly C{patterns} (what the current view shows). */
export function showPatterns(patterns) { return client.setPatterns(patterns); }

// -- the token ------------------------------------------------------------------

export function requireToken(required) { auth.required = required === true; }
export function tokenRequired() { return auth.required; }
/** The token in use (null without one): for the page's HTTP requests to the same server. */
export function currentToken() { return client.token; }

/**
 * Use C{token} from now on. Live with a token: ask the server to refresh this
 * connection's grant and return 'refresh' (the answer comes through the handlers);
 * otherwise connect with it now and return 'connect'.
 */
export function useToken(token) {
  if (client.isOpen() && client.state === 'live' && client.token) {
    client.request({ type: 'auth', token }).then(
      () => { client.token = token; handlers.onRefreshAccepted(token); },
      () => handlers.onRefreshRefused()
    );
    return 'refresh';
  }
  client.useToken(token);
  return 'connect';
}

/** The token to offer from the next connection on. */
export function setToken(token) { client.token = token; }

/** Forget the token and close the connection; nothing reconnects until a token is given (if one is needed). */
export function signOut() {
  client.signOut();
  if (!auth.required) client.useToken(null);
}

/** Connect, and keep connected; C{given}: {onStatus, onAuthFailed, onRefreshAccepted, onRefreshRefused}. */
export function startSocket(given) {
  handlers = { ...handlers, ...given };
  const pace = sendPace();
  client.options.rate = pace.rate;
  client.options.burst = pace.burst;
  client.tokens = pace.burst;
  client.on('status', (state) => handlers.onStatus(state));
  client.on('authfailed', (reason) => handlers.onAuthFailed(reason));
  window.addEventListener('online', () => {
    if (client.retryTimer !== null) client.connect();
  });
  if (auth.required && !client.token) {
    client.state = 'signed-out';
    handlers.onStatus('signed-out');
  }
  client.start();
}
