"""The report's Markdown and HTML renderers."""

from __future__ import annotations

from trainlab.analysis.document import Document, Paragraph, render_html


def test_bold_holds_names_with_stars_and_markup_is_escaped():
    doc = Document("t")
    doc.add(Paragraph("**t&<b>_x*y*.npz** — its best seed is run #3"))
    html = render_html(doc)
    assert "<strong>t&amp;&lt;b&gt;_x*y*.npz</strong>" in html
    assert "<b>" not in html.split("<body>")[-1]
