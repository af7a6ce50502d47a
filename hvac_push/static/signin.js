/* Signing in to a server that needs a token (client-limits.json says auth_required):
 * the sign-in form, the token kept for this browser session only (sessionStorage),
 * a token handed over once in the URL fragment (#token=...) and then removed from
 * the address bar, refreshing the grant of a live connection, and saying plainly
 * why the page is signed out (no token yet, expired, refused, signed out).
 * The token itself travels as a WebSocket subprotocol (socket.js), never in a URL.
 */

import { $ } from './dom.js';
import { setToken, signOut, tokenRequired, useToken } from './socket.js';

const TOKEN_KEY = 'hvac-push.token';
// What an HTTP token (RFC 9110), and so a subprotocol name, may hold: JWTs and hash-token's tokens do.
const TOKEN_SHAPE = /^[A-Za-z0-9!#$%&'*+.^_`|~-]+$/;

const NOTES = {
  required: 'This server needs an access token. Paste the token you were given.',
  expired: 'Your token has expired. Sign in again with a new token.',
  refused: 'The server refused the token: it is not valid for this server (mistyped, revoked or expired). Sign in with another token.',
  malformed: 'That is not a token: a token is one word of letters, digits and . _ - (no spaces).',
  'signed-out': 'Signed out: this browser has forgotten the token.',
  'refresh-refused': 'The server refused the new token; the current one stays in force until it expires.',
  change: 'Paste a new token: the connection keeps going and takes the new grant.'
};

function remembered() {
  try { return window.sessionStorage.getItem(TOKEN_KEY); } catch (e) { return null; }
}

function remember(token) {
  try { window.sessionStorage.setItem(TOKEN_KEY, token); } catch (e) { /* storage off: this page only */ }
}

function forget() {
  try { window.sessionStorage.removeItem(TOKEN_KEY); } catch (e) { /* nothing kept */ }
}

/** A token handed over in the fragment (#token=...), removed from the address bar and history at once. */
function tokenFromFragment() {
  const hash = window.location.hash;
  if (!hash || hash.length < 2) return null;
  const params = new URLSearchParams(hash.slice(1));
  const token = params.get('token');
  if (token === null) return null;
  params.delete('token');
  const rest = params.toString();
  const url = window.location.pathname + window.location.search + (rest ? '#' + rest : '');
  window.history.replaceState(window.history.state, '', url);
  return token.trim();
}

function showForm(reason) {
  const box = $('signin');
  box.hidden = false;
  box.dataset.reason = reason;
  $('signin-note').textContent = NOTES[reason] || NOTES.required;
  $('signin-cancel').hidden = reason !== 'change' && reason !== 'refresh-refused';
  // Signed out (not a change of token while live): the form is the page until there is data.
  if (reason !== 'change' && reason !== 'refresh-refused') document.body.dataset.signin = reason;
  const field = $('signin-token');
  field.value = '';
  field.focus();
}

function hideForm() {
  $('signin').hidden = true;
  delete document.body.dataset.signin;
}

function showControls(signedIn) {
  $('signout').hidden = !signedIn;
  $('token-change').hidden = !signedIn;
}

/** Take a token from the form or the fragment: refresh a live connection, or connect with it. */
function offer(token) {
  if (!TOKEN_SHAPE.test(token)) {
    showForm('malformed');
    return;
  }
  if (useToken(token) === 'connect') {
    remember(token);
    hideForm();
    showControls(true);
  } else {
    $('signin').dataset.reason = 'refreshing';
  }
}

/** The server closed with 4001 or refused the handshake (socket.js): forget the token, ask for another. */
export function tokenFailed(reason) {
  forget();
  showControls(false);
  showForm(reason);
}

/** The answer to a refresh ({"type":"authenticated"}): the new token is the one kept from now on. */
export function refreshAccepted(token) {
  setToken(token);
  remember(token);
  hideForm();
}

/** The server refused a refresh (error unauthorized): the old grant still holds. */
export function refreshRefused() {
  showForm('refresh-refused');
}

/**
 * Wire the form and the controls, and choose the token to start with: one in the
 * fragment first, then the one this session kept. Call before startSocket.
 */
export function initSignin() {
  $('signin-form').addEventListener('submit', (event) => {
    event.preventDefault();  // never a navigation: the token must not end up in a URL
    offer($('signin-token').value.trim());
  });
  $('signin-cancel').addEventListener('click', hideForm);
  $('token-change').addEventListener('click', () => showForm('change'));
  $('signout').addEventListener('click', () => {
    forget();
    showControls(false);
    signOut();
    if (tokenRequired()) showForm('signed-out');
  });
  window.addEventListener('hashchange', () => {
    const token = tokenFromFragment();
    if (token) offer(token);
  });
  const handed = tokenFromFragment();
  const token = handed || remembered();
  if (token && TOKEN_SHAPE.test(token)) {
    remember(token);
    setToken(token);
    showControls(true);
  } else if (tokenRequired()) {
    showForm(token ? 'malformed' : 'required');
  }
}
