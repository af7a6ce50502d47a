/* The two DOM helpers every view uses: find an element of index.html by id, and
 * make a new element with a class and text. Text is always set as text, never as
 * HTML, so nothing a server sends can inject markup.
 */

export function $(id) { return document.getElementById(id); }

export function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = text;
  return node;
}
