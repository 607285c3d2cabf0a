"""A small, safe Markdown for the operator's notes (the top-up page's prices and rates).

The text is HTML-escaped first, whole, and only then are a few Markdown forms turned into tags
this module writes itself, so nothing in the text can become a tag, attribute or script:
paragraphs, line breaks, ``#`` headings, ``-``/``*`` and ``1.`` lists, ``**bold**``,
``*italic*``, ```code```, and ``[text](url)`` links to http(s), mailto or a path on this site.
"""

import re

from django import template
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

register = template.Library()

_CODE = re.compile(r"`([^`\n]+)`")
_BOLD = re.compile(r"\*\*(?=\S)(.+?)(?<=\S)\*\*")
_ITALIC = re.compile(r"(?<![\w*])\*(?=\S)([^*\n]+?)(?<=\S)\*(?![\w*])")
_LINK = re.compile(r"\[([^\]\n]+)\]\(([^)\s]+)\)")
_SAFE_URL = re.compile(r"^(https?://|mailto:|/(?!/))", re.IGNORECASE)
_HEADING = re.compile(r"^(#{1,3})\s+(.*)$")
_BULLET = re.compile(r"^\s*[-*]\s+(.*)$")
_NUMBERED = re.compile(r"^\s*\d+[.)]\s+(.*)$")


def _link(match: re.Match) -> str:
    text, url = match.group(1), match.group(2)
    if not _SAFE_URL.match(url):
        return match.group(0)
    return f'<a href="{url}" rel="noopener nofollow">{text}</a>'


def _inline(escaped: str) -> str:
    """Inline forms on text that is already escaped (code spans keep their content as is)."""
    parts = _CODE.split(escaped)
    out = []
    for index, part in enumerate(parts):
        if index % 2:
            out.append(f"<code>{part}</code>")
            continue
        part = _LINK.sub(_link, part)
        part = _BOLD.sub(r"<strong>\1</strong>", part)
        part = _ITALIC.sub(r"<em>\1</em>", part)
        out.append(part)
    return "".join(out)


def render_markdown(text: str) -> SafeString:
    """``text`` as HTML that holds no tag but the ones Markdown asked for."""
    html: list[str] = []
    paragraph: list[str] = []
    list_tag = ""

    def close_paragraph():
        if paragraph:
            html.append("<p>" + "<br>".join(_inline(line) for line in paragraph) + "</p>")
            paragraph.clear()

    def close_list():
        nonlocal list_tag
        if list_tag:
            html.append(f"</{list_tag}>")
            list_tag = ""

    for raw in str(text).replace("\r\n", "\n").split("\n"):
        line = escape(raw.rstrip())
        heading, bullet, numbered = _HEADING.match(line), _BULLET.match(line), _NUMBERED.match(line)
        if not line.strip():
            close_paragraph()
            close_list()
        elif heading:
            close_paragraph()
            close_list()
            level = len(heading.group(1)) + 2  # h3..h5: under the page's own headings
            html.append(f"<h{level}>{_inline(heading.group(2))}</h{level}>")
        elif bullet or numbered:
            close_paragraph()
            wanted = "ul" if bullet else "ol"
            if list_tag != wanted:
                close_list()
                html.append(f"<{wanted}>")
                list_tag = wanted
            html.append(f"<li>{_inline((bullet or numbered).group(1))}</li>")
        else:
            close_list()
            paragraph.append(line.strip())
    close_paragraph()
    close_list()
    return mark_safe("\n".join(html))  # noqa: S308 (every piece of text was escaped above)


@register.filter(name="markdown")
def markdown_filter(text) -> SafeString:
    """``{{ note|markdown }}``: operator Markdown as HTML, every HTML tag in it escaped."""
    return render_markdown(text or "")
