"""The shell of a self-contained HTML page and its inline charts: the report and the account pages share them."""

from __future__ import annotations

import html


def svg(chart) -> str:
    """An Altair chart as an inline SVG element (rendered offline by vl-convert, imported
    here so a page without charts never loads it)."""
    import vl_convert

    text = vl_convert.vegalite_to_svg(chart.to_json())
    return text[text.index("<svg"):]


def html_document(title: str, style: str, header_html: str, sections: list[tuple[str, str]]) -> str:
    """One page: ``<title>``, inline style, a header (already HTML), then one ``<section>`` per
    (heading, HTML content)."""
    body = "".join(f"<section><h2>{html.escape(heading)}</h2>{content}</section>" for heading, content in sections)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{html.escape(title)}</title><style>{style}</style></head><body>"
        f"{header_html}{body}</body></html>\n"
    )
