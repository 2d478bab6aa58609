"""The pages' one jinja environment and what every page shares: templates read from the installed
package (pipeline/pages/templates/), autoescaped, an undefined name an error, numbers through
core.fmt (filters `num` and `ci`), text with `backticked` commands through the `code` filter;
thumbnails as data: URIs (pages are self-contained, offline)."""

from __future__ import annotations

import base64
import io
from functools import lru_cache

import jinja2
from markupsafe import Markup

from pipeline.core.fmt import ci, num

FLAGS = ("safety_flagged", "sd_checker_nsfw")  # a row flagged by either detector is blurred on every page


@lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("pipeline.pages", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters.update(num=num, ci=ci, code=code)
    return env


def code(text: str) -> Markup:
    """Plain text shared with the terminal output, escaped, with its `backticked` commands as <code>."""
    parts = str(Markup.escape(text)).split("`")
    if len(parts) % 2 == 0:  # an unpaired backtick: leave the text as it is
        return Markup.escape(text)
    return Markup("".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts)))


def render(template: str, **context) -> Markup:
    """``template`` (a file of templates/) rendered; Markup, so a page can embed it unescaped."""
    return Markup(environment().get_template(template).render(**context))


def flagged(row: dict) -> bool:
    """Whether a row ({column: value}) is flagged by a safety detector."""
    for c in FLAGS:
        v = row.get(c)
        if v is not None and not (isinstance(v, float) and v != v) and bool(v):
            return True
    return False


def thumbnail(png: bytes, blur: bool, size: int) -> str:
    """A data: URI of ``png`` at most ``size`` px, blurred when ``blur``; small unflagged images go in
    as stored, byte for byte."""
    from PIL import Image, ImageFilter

    im = Image.open(io.BytesIO(png))
    if blur or max(im.size) > size:
        im = im.convert("RGB")
        if blur:  # flagged images are never shown in the clear, not even as thumbnails
            im = im.filter(ImageFilter.GaussianBlur(max(2, max(im.size) // 12)))
        im.thumbnail((size, size))
        buf = io.BytesIO()
        im.save(buf, format="PNG")
        png = buf.getvalue()
    return "data:image/png;base64," + base64.b64encode(png).decode()
