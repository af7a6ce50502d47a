/* Where the page is, in the URL's fragment, so a link names a site, a kind or a
 * unit and the back button walks back through them:
 *   #/                      the overview of every site
 *   #/site/SITE[/KIND]      one site (one kind of unit in it)
 *   #/unit/SITE/UNIT[/POINT] a unit page (POINT: open that point's large chart)
 * A #token=... fragment belongs to signin.js, which removes it at once.
 */

export function parseRoute(hash) {
  const text = String(hash || '').replace(/^#/, '');
  if (!text.startsWith('/')) return { view: 'overview', site: null, kind: null };
  const parts = text.slice(1).split('/').filter(Boolean).map((x) => decodeURIComponent(x));
  if (parts[0] === 'unit' && parts.length >= 3) {
    return { view: 'unit', site: parts[1], unit: parts[2], point: parts.slice(3).join('/') || null };
  }
  if (parts[0] === 'site' && parts.length >= 2) return { view: 'overview', site: parts[1], kind: parts[2] || null };
  return { view: 'overview', site: null, kind: null };
}

/** C{onRoute(route)} now and on every change of the fragment (links, back, forward). */
export function startRouter(onRoute) {
  window.addEventListener('hashchange', () => onRoute(parseRoute(window.location.hash)));
  onRoute(parseRoute(window.location.hash));
}
