"""Data as inert text in Markdown and HTML: what ``report.md`` and the HTML views show of prompts,
subjects, paths and reasons.

A Known prompt or a file name is data, and data may hold ``<script>``, ``<img onerror=…>`` or a
Markdown link or image; written raw into ``report.md`` any CommonMark viewer would render it (and
run it). :func:`md_text` makes a value plain text under CommonMark and GitHub-flavoured Markdown:

- ``&``, ``<``, ``>`` and ``"`` become character references (``&lt;`` …): no raw HTML, no autolink
  ``<http://…>``, no entity smuggled in;
- every other ASCII punctuation character is backslash-escaped (CommonMark 2.4: "any ASCII
  punctuation character may be backslash-escaped"), so no ``[link](…)``, ``![image](…)``,
  emphasis, code span, heading, list, table cell separator ``|`` or GFM bare-URL autolink
  (``www\\.x\\.com``, ``https\\://…``) can start inside it;
- line breaks become spaces, so a value cannot end the heading or table row it sits in.

The rendered text reads exactly as the value (tested against ``markdown_it``'s CommonMark renderer).

Characters a terminal or viewer acts on instead of showing (:data:`UNSAFE`: C0 controls such as ESC,
which starts a cursor or colour sequence, and BEL; DEL; C1 controls, U+009B being a one-character CSI
where C1 is read; the bidirectional overrides and isolates, which reorder what is shown) never reach
a report, a page or a terminal: :func:`visible` names each (ESC is ``␛``, U+0085 is ``\\u0085``), so
``cat report.md`` shows the text and moves no cursor. :func:`terminal_text` does the same for a line
printed on a terminal (the CLI's error lines).

:func:`html_text` does the same for HTML element content and attribute values: every ASCII
punctuation character becomes a numeric character reference (``<`` is ``&#60;``, ``=`` is ``&#61;``),
so not even the text ``onerror=`` of a hostile value appears in the page source.
"""

from __future__ import annotations

import re
import string

#: Characters acted on rather than shown (module docstring): C0, DEL, C1, bidi overrides and isolates.
UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_LINE_BREAKS = "\n\r\t\u2028\u2029"  # a space in one-line Markdown (they would end a heading or row)


def visible(char: str) -> str:
    """What an :data:`UNSAFE` character is shown as: its Unicode control picture for C0 and DEL
    (``\\x1b`` is ``␛``, BEL ``␇``), ``\\uXXXX`` for the others (C1, bidi controls)."""
    code = ord(char)
    if code < 0x20:
        return chr(0x2400 + code)
    if code == 0x7F:
        return "\u2421"
    return f"\\u{code:04x}"


def _controls(escape: dict[int, str]) -> dict[int, str]:
    """Every :data:`UNSAFE` code point -> its :func:`visible` form with ``escape`` applied."""
    codes = [c for c in range(0x2070) if UNSAFE.match(chr(c))]
    return {c: "".join(escape.get(ord(x), x) for x in visible(chr(c))) for c in codes}


def terminal_text(value: object) -> str:
    """``str(value)`` with every :data:`UNSAFE` character as its :func:`visible` form: safe to print."""
    return UNSAFE.sub(lambda m: visible(m.group()), str(value))


_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"}
_TABLE = {ord(c): _ENTITIES.get(c, "\\" + c) for c in string.punctuation}
_TABLE.update(_controls(_TABLE))
_TABLE.update({ord(c): " " for c in _LINE_BREAKS})


def md_text(value: object) -> str:
    """``str(value)`` as Markdown that renders as exactly that text on one line (module docstring)."""
    return str(value).translate(_TABLE)


def md_code(value: object) -> str:
    """``str(value)`` as one Markdown code span (shown literally, copy-pasteable: a command or a path):
    fenced by one backtick more than the longest backtick run inside, line breaks as spaces."""
    text = terminal_text(str(value).translate({ord(c): " " for c in _LINE_BREAKS}))
    fence = "`" * (max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text[:1] == "`" or text[-1:] == "`" else ""  # CommonMark strips one space each side
    return f"{fence}{pad}{text}{pad}{fence}"


def md_quoted(value: object) -> str:
    """``md_text`` between typographic quotes: “The Space Needle is located in …”."""
    return f"“{md_text(value)}”"


_HTML = {ord(c): f"&#{ord(c)};" for c in string.punctuation}
_HTML.update(_controls(_HTML))
_HTML.update({ord("\n"): "\n", ord("\t"): "\t", ord("\r"): "&#13;"})  # whitespace in HTML: kept, CR as a reference


def html_text(value: object) -> str:
    """``str(value)`` for HTML text or a quoted attribute value: ASCII punctuation as ``&#NN;``, line
    breaks and tabs kept (CR as ``&#13;``), other :data:`UNSAFE` characters in their :func:`visible` form."""
    return str(value).translate(_HTML)
