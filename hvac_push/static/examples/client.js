/* The smallest page that uses hvac-push-client.js: one unit's points, live.
 * Open /static/examples/client.html?points=plant/chiller-1/%23 on a server;
 * the client is left on window.client for experiments in the console.
 */

import { HvacPushClient } from '../hvac-push-client.js';

const patterns = (new URLSearchParams(window.location.search).get('points') || 'plant/chiller-1/#').split(',');
// This page is /static/examples/client.html: the server's ws endpoint is two levels up.
const url = new URL('../../ws', window.location.href);
url.protocol = window.location.protocol === 'https:' ? 'wss:' : 'ws:';
const client = new HvacPushClient({ url: url.toString(), patterns });
window.client = client;
document.getElementById('patterns').textContent = patterns.join(', ');

client.on('status', (state) => { document.getElementById('state').textContent = state; });
client.on('change', () => {
  const list = document.getElementById('points');
  list.textContent = '';
  Array.from(client.mirror.points.keys()).sort().forEach((id) => {
    const p = client.mirror.points.get(id);
    const li = document.createElement('li');
    li.textContent = id + ' = ' + p.value + ' ' + (p.unit || '') + ' (' + p.status + ')';
    list.appendChild(li);
  });
});
client.start();
