/* The search box: unit and point names across the plant (from plant.js), as a
 * list of links under the box. Arrow keys move through the results, Enter
 * opens one, Escape closes the list. A unit opens its page; a point opens its
 * unit's page with that point's chart.
 */

import { $, el } from './dom.js';
import { kindInfo } from './kinds.js';
import { collator, prettyName } from './points.js';
import { plant } from './plant.js';

const MAX_RESULTS = 20;

function results(query) {
  const q = query.trim().toLowerCase();
  if (!q) return [];
  const units = [];
  const points = [];
  plant.units.forEach((u, key) => {
    if (u.unit.toLowerCase().includes(q) || key.toLowerCase().includes(q)) {
      units.push({ href: '#/unit/' + key, text: u.unit, note: kindInfo(u.kind).one + ' \u00b7 ' + u.site, sort: u.unit });
    }
    if (points.length < MAX_RESULTS * 5) {
      u.points.forEach((name) => {
        if (name.toLowerCase().includes(q) || prettyName(name).toLowerCase().includes(q)) {
          points.push({ href: '#/unit/' + key + '/' + name, text: u.unit + ' \u00b7 ' + prettyName(name), note: 'point', sort: u.unit + '/' + name });
        }
      });
    }
  });
  units.sort((a, b) => collator.compare(a.sort, b.sort));
  points.sort((a, b) => collator.compare(a.sort, b.sort));
  return units.concat(points).slice(0, MAX_RESULTS);
}

function render() {
  const box = $('search-results');
  const input = $('search');
  const found = results(input.value);
  box.textContent = '';
  found.forEach((r, i) => {
    const li = el('li', 'search-result');
    const a = el('a', null, r.text);
    a.href = r.href;
    a.id = 'search-result-' + i;
    a.setAttribute('role', 'option');
    a.appendChild(el('span', 'search-note', ' ' + r.note));
    a.addEventListener('click', close);
    li.appendChild(a);
    box.appendChild(li);
  });
  box.hidden = !input.value.trim();
  if (input.value.trim() && !found.length) box.appendChild(el('li', 'search-none', 'No unit or point matches'));
  input.setAttribute('aria-expanded', String(!box.hidden));
}

function close() {
  $('search-results').hidden = true;
  $('search').setAttribute('aria-expanded', 'false');
}

export function initSearch() {
  const input = $('search');
  input.addEventListener('input', render);
  input.addEventListener('keydown', (e) => {
    const links = Array.from($('search-results').querySelectorAll('a'));
    if (e.key === 'ArrowDown' && links.length) {
      e.preventDefault();
      links[0].focus();
    } else if (e.key === 'Enter' && links.length) {
      e.preventDefault();
      window.location.hash = links[0].getAttribute('href');
      close();
    } else if (e.key === 'Escape') {
      close();
    }
  });
  $('search-results').addEventListener('keydown', (e) => {
    const links = Array.from($('search-results').querySelectorAll('a'));
    const i = links.indexOf(document.activeElement);
    if (e.key === 'ArrowDown' && i >= 0 && i + 1 < links.length) { e.preventDefault(); links[i + 1].focus(); }
    if (e.key === 'ArrowUp') { e.preventDefault(); if (i > 0) links[i - 1].focus(); else input.focus(); }
    if (e.key === 'Escape') { close(); input.focus(); }
  });
  window.addEventListener('hashchange', close);
}
