"""The report's Markdown and HTML renderers."""

from __future__ import annotations

from trainlab.analysis.document import (
    Bullets,
    Code,
    Document,
    Paragraph,
    Table,
    render_html,
    render_markdown,
)


def test_bold_holds_names_with_stars_and_markup_is_escaped():
    doc = Document("t")
    doc.add(Paragraph("**t&<b>_x*y*.npz** — its best seed is run #3"))
    html = render_html(doc)
    assert "<strong>t&amp;&lt;b&gt;_x*y*.npz</strong>" in html
    assert "<b>" not in html.split("<body>")[-1]


def test_markdown_keeps_names_from_users_files_literal(tmp_path):
    doc = Document("study <i>x</i>")
    doc.add(
        Paragraph("**data/<b>odd.npz** best, p < 0.05, `a<b>` in code"),
        Bullets(["<!-- hidden -->"]),
        Table(["data.dataset", "n"], [["<script>x.npz", "3"]]),
        Code("<b>kept</b>"),
    )
    text = render_markdown(doc, tmp_path)
    assert "# study &lt;i>x&lt;/i>" in text
    assert "**data/&lt;b>odd.npz** best, p < 0.05, `a<b>` in code" in text  # code span as is
    assert "- &lt;!-- hidden -->" in text
    assert "| &lt;script>x.npz | 3 |" in text
    assert "```\n<b>kept</b>\n```" in text
