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

:func:`html_text` does the same for HTML element content and attribute values: every ASCII
punctuation character becomes a numeric character reference (``<`` is ``&#60;``, ``=`` is ``&#61;``),
so not even the text ``onerror=`` of a hostile value appears in the page source.
"""

from __future__ import annotations

import re
import string

_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"}
_TABLE = {ord(c): _ENTITIES.get(c, "\\" + c) for c in string.punctuation}
_TABLE.update({ord("\n"): " ", ord("\r"): " ", ord("\t"): " ", ord("\u2028"): " ", ord("\u2029"): " "})


def md_text(value: object) -> str:
    """``str(value)`` as Markdown that renders as exactly that text on one line (module docstring)."""
    return str(value).translate(_TABLE)


def md_code(value: object) -> str:
    """``str(value)`` as one Markdown code span (shown literally, copy-pasteable: a command or a path):
    fenced by one backtick more than the longest backtick run inside, line breaks as spaces."""
    text = str(value).translate({ord("\n"): " ", ord("\r"): " "})
    fence = "`" * (max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text[:1] == "`" or text[-1:] == "`" else ""  # CommonMark strips one space each side
    return f"{fence}{pad}{text}{pad}{fence}"


def md_quoted(value: object) -> str:
    """``md_text`` between typographic quotes: “The Space Needle is located in …”."""
    return f"“{md_text(value)}”"


_HTML = {ord(c): f"&#{ord(c)};" for c in string.punctuation}


def html_text(value: object) -> str:
    """``str(value)`` for HTML text or a quoted attribute value: ASCII punctuation as ``&#NN;``."""
    return str(value).translate(_HTML)
