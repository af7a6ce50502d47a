"""A Sphinx directive that renders a C{twisted.python.usage.Options} class as a table.

The configuration reference is generated from the code at build time, so it
cannot drift from what C{twistd hvacpush --help} accepts:

    ```{options-table} hvac_push.ops.tap.Options
    ```

    ```{options-table} twisted.scripts.twistd.ServerOptions
    :only: nodaemon, pidfile, logger, logfile, reactor
    ```

Each row shows the option (and its short form), its default, and its
description: the C{optParameters}/C{optFlags} text, or the C{opt_*} method's
docstring, plus the coercer's C{coerceDoc} when it has one. The module can also
be run as a script to print the same reference as Markdown.
"""

from __future__ import annotations

import inspect
import re
import sys
from dataclasses import dataclass
from typing import Any

from twisted.python import reflect, usage

HIDDEN = {"help", "version"}


@dataclass
class OptionDoc:
    name: str
    short: str | None
    argument: str | None  # the metavar, or None for a flag
    default: str
    doc: str


def _clean(text: str | None) -> str:
    return re.sub(r"\s+", " ", text or "").strip()


def describe(options_class: type[usage.Options]) -> list[OptionDoc]:
    """Every option of C{options_class} in the order C{--help} lists them."""
    instance = options_class()
    parameters: dict[str, list[Any]] = {}
    collected: list[list[Any]] = []
    reflect.accumulateClassList(options_class, "optParameters", collected)
    for entry in collected:
        parameters[entry[0]] = list(entry) + [None] * (5 - len(entry))
    flags: dict[str, list[Any]] = {}
    collected = []
    reflect.accumulateClassList(options_class, "optFlags", collected)
    for entry in collected:
        flags[entry[0]] = list(entry) + [None] * (3 - len(entry))
    shorts = {long: short for short, long in _short_names(instance).items()}
    #: Optional C{{option: METAVAR}} on the Options class, for nicer labels than VALUE.
    metavars: dict[str, str] = getattr(options_class, "metavars", {})

    found: list[OptionDoc] = []
    for spec in instance.longOpt:
        takes_argument = spec.endswith("=")
        name = spec.rstrip("=")
        if name in HIDDEN or instance.synonyms.get(name, name) != name:
            continue
        doc = _clean(instance.docs.get(name))
        default = ""
        argument: str | None = None
        if name in parameters:
            _, _, value, _, coerce = parameters[name]
            argument = "VALUE"
            default = "" if value is None else str(value)
            extra = _clean(getattr(coerce, "coerceDoc", None))
            if extra:
                doc = f"{doc} {extra}".strip()
        elif name in flags:
            argument = None
        elif takes_argument:
            method = getattr(instance, "opt_" + name.replace("-", "_"), None)
            argument = "VALUE"
            if method is not None:
                params = [p for p in inspect.signature(method).parameters]
                if params:
                    argument = params[0].upper()
            current = instance.get(name)
            if current not in (None, [], {}, ""):
                default = str(current)
        if argument is not None:
            argument = metavars.get(name, argument)
        found.append(OptionDoc(name, shorts.get(name), argument, default, doc))
    return found


def _short_names(instance: usage.Options) -> dict[str, str]:
    shorts: dict[str, str] = {}
    for short in instance.shortOpt.replace(":", ""):
        long = instance.synonyms.get(short)
        if long:
            shorts[short] = long
    return shorts


def option_label(option: OptionDoc) -> str:
    label = f"--{option.name}"
    if option.argument:
        label += f" {option.argument}"
    if option.short:
        label = f"-{option.short}, {label}"
    return label


def as_markdown(options_class: type[usage.Options], only: list[str] | None = None) -> str:
    rows = ["| option | default | description |", "|---|---|---|"]
    for option in describe(options_class):
        if only and option.name not in only:
            continue
        default = f"`{option.default}`" if option.default else ""
        doc = option.doc.replace("|", r"\|")
        rows.append(f"| `{option_label(option)}` | {default} | {doc} |")
    return "\n".join(rows) + "\n"


# -- Sphinx ------------------------------------------------------------------------


def setup(app: Any) -> dict[str, Any]:
    from docutils import nodes
    from docutils.parsers.rst import directives
    from sphinx.util.docutils import SphinxDirective

    class OptionsTable(SphinxDirective):
        required_arguments = 1
        option_spec = {"only": directives.unchanged}

        def run(self) -> list[Any]:
            try:
                options_class = reflect.namedAny(self.arguments[0])
            except Exception as e:
                raise self.error(f"options-table: cannot import {self.arguments[0]}: {e}") from None
            only = [n.strip() for n in self.options.get("only", "").split(",") if n.strip()]
            described = describe(options_class)
            missing = set(only) - {o.name for o in described}
            if missing:
                raise self.error(f"options-table: {self.arguments[0]} has no option {', '.join(sorted(missing))}")
            self.env.note_dependency(inspect.getsourcefile(options_class) or "")

            table = nodes.table(classes=["options-table"])
            group = nodes.tgroup(cols=3)
            table += group
            for width in (30, 12, 58):
                group += nodes.colspec(colwidth=width)
            head = nodes.thead()
            group += head
            head += _row(nodes, [nodes.Text("option"), nodes.Text("default"), nodes.Text("description")])
            body = nodes.tbody()
            group += body
            for option in described:
                if only and option.name not in only:
                    continue
                label = nodes.literal(text=option_label(option))
                default = nodes.literal(text=option.default) if option.default else nodes.Text("")
                body += _row(nodes, [label, default, nodes.Text(option.doc)])
            return [table]

    app.add_directive("options-table", OptionsTable)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}


def _row(nodes: Any, cells: list[Any]) -> Any:
    row = nodes.row()
    for content in cells:
        entry = nodes.entry()
        entry += nodes.paragraph("", "", content)
        row += entry
    return row


if __name__ == "__main__":
    sys.stdout.write(as_markdown(reflect.namedAny(sys.argv[1] if len(sys.argv) > 1 else "hvac_push.ops.tap.Options")))
