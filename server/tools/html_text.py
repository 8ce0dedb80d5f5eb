"""HTML reduced to readable text for a model: block elements become line breaks, scripts and styles vanish,
and links stay as ``text (url)`` with the URL made absolute, so the model can follow them with web_fetch."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from urllib.parse import urljoin

_BLOCK = {"p", "div", "br", "li", "ul", "ol", "tr", "table", "section", "article", "header", "footer", "nav",
          "h1", "h2", "h3", "h4", "h5", "h6", "pre", "blockquote", "hr", "dt", "dd", "title", "main", "aside"}
_SKIP = {"script", "style", "noscript", "template", "svg", "head"}


class _Text(HTMLParser):
    def __init__(self, base: str) -> None:
        super().__init__(convert_charrefs=True)
        self.base = base
        self.out: list[str] = []
        self.skip = 0
        self.href: str | None = None
        self.link_text: list[str] = []
        self.title = ""
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "title":
            self._in_title = True
        if tag in _SKIP and tag != "head":
            self.skip += 1
        elif tag == "a":
            href = dict(attrs).get("href")
            if href and not href.startswith(("javascript:", "#")):
                self.href, self.link_text = urljoin(self.base, href), []
        elif tag in _BLOCK:
            self.out.append("\n")
        if tag == "li":
            self.out.append("- ")

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False
        if tag in _SKIP and tag != "head":
            self.skip = max(0, self.skip - 1)
        elif tag == "a" and self.href is not None:
            text = " ".join("".join(self.link_text).split())
            self.out.append(f"{text} ({self.href})" if text and text != self.href else self.href)
            self.href = None
        elif tag in _BLOCK:
            self.out.append("\n")

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data
            return
        if self.skip:
            return
        if self.href is not None:
            self.link_text.append(data)
        else:
            self.out.append(data)


def html_to_text(html: str, base_url: str) -> str:
    """Readable text of ``html``; the page's title, if any, on the first line."""
    parser = _Text(base_url)
    parser.feed(html)
    parser.close()
    lines = [" ".join(line.split()) for line in "".join(parser.out).splitlines()]
    body = re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
    title = " ".join(parser.title.split())
    return f"# {title}\n\n{body}" if title else body
