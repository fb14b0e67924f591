"""``format: html`` on the shared tiny de→en run: what is kept byte for byte, tag sequences
on hostile snippets, malformed input answered, one output per input, ``infer
--input-format html``; and tag placement on a known alignment."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.html import check_answer, hostile_snippets, plain_text, tag_sequence
from translate.infer import main
from translate.inference.html import HtmlError, HtmlJob, translate_html
from translate.inference.html_align import place, render, units
from translate.inference.html_segments import Segment, layout
from translate.inference.html_tree import parse
from translate.inference.translator import Translator

# Short outputs: these tests are about the markup, and the tiny model's long outputs are slow.
FAST = {"beam": 1, "max_len_a": 0.0, "max_len_b": 12}

UNTOUCHED = [
    '<code class="x">a &lt; b &amp;&amp; c</code>',
    "<pre>\n  eingerückt\n\t<b>fett</b> &amp; roh\n</pre>",
    '<script>if (a < b && c > "</p>") { x(); }</script>',
    "<style>p > b { content: '&amp;'; }</style>",
    "<textarea>\n Eine Frau &amp; ein <b>Hund</b></textarea>",
    '<span translate="no">Köln &amp; Bonn</span>',
    '<span class="brand notranslate">GitHub</span>',
    '<div translate=NO><p>Ein Mann <i>läuft</i>.</p></div>',
    "<!-- ein Kommentar <b>nicht</b> übersetzt -->",
    '<a href="https://example.com/?a=1&amp;b=2&c=3" title=\'Er sagte "hallo" &amp; ging\'>',
    '<img src="hund.png" alt="ein &quot;Hund&quot; &#x1F415;">',
    "<B data-x=ohne-anführung>",
]


@pytest.fixture(scope="module")
def translator(trained_run: Path) -> Translator:
    torch.set_num_threads(2)
    return Translator.load(trained_run, device="cpu")


def test_untouched_regions_are_kept_byte_for_byte(translator):
    doc = (
        f"<p>Ein Mann {UNTOUCHED[0]} fährt mit dem Fahrrad.</p>\n{UNTOUCHED[1]}\n"
        f"<p>Zwei Hunde {UNTOUCHED[2]}{UNTOUCHED[3]} spielen {UNTOUCHED[4]} im Schnee.</p>\n"
        f"<ul>\n  <li>Eine Frau aus {UNTOUCHED[5]} singt.</li>\n"
        f"  <li>{UNTOUCHED[6]} ist ein Name {UNTOUCHED[8]} und ein Kind lacht.</li>\n</ul>\n"
        f"{UNTOUCHED[7]}\n<p>{UNTOUCHED[9]}Ein Junge</a> springt {UNTOUCHED[10]} ins Wasser"
        f" {UNTOUCHED[11]}sehr hoch</B>.</p>\n"
    )
    (out,) = translate_html(translator, [doc], **FAST)
    for region in UNTOUCHED:
        assert region in out.text, region
    # the whitespace between blocks, as written
    assert "</p>\n<pre>" in out.text and "</pre>\n<p>" in out.text
    assert out.text.count("\n  <li>") == 2
    assert tag_sequence(out.text) == tag_sequence(doc)
    # and the words did change: the translatable text went through the model
    assert "Fahrrad" not in out.text and "Schnee" not in out.text


def test_translation_is_the_plain_text_translation(translator, multi30k):
    german = multi30k.joinpath("test_2016_flickr.de").read_text(encoding="utf-8").splitlines()
    sentences = german[:8]
    tagged = []
    for s in sentences:
        words = s.split()
        words[1] = f"<b>{words[1]}</b>"
        tagged.append(f"<p>{' '.join(words)}</p>")
    html = translate_html(translator, tagged, **FAST)
    plain = translator.translate(sentences, **FAST)
    for h, p in zip(html, plain, strict=True):
        assert plain_text(h.text) == " ".join(p.text.split())
        assert h.text.count("<b>") == 1 and h.text.count("</b>") == 1
        assert h.score == pytest.approx(p.score)


def test_a_job_batches_its_segments_with_other_texts(translator):
    docs = ["<p>Ein <b>Hund</b> läuft.</p><p>Zwei Männer.</p>", "", "<i>Eine Frau</i> singt."]
    job = HtmlJob(translator, docs)
    assert job.attention and len(job.texts) == 3
    seen: list[tuple[int, str]] = []
    mixed = translator.translate(["Ein Kind spielt.", *job.texts], attention=job.attention,
                                 **FAST)
    answers = job.finish(mixed[1:])
    assert [a.text for a in answers] == [
        a.text for a in translate_html(translator, docs, on_warning=lambda i, m: seen.append(
            (i, m)), **FAST)]
    assert answers[1].text == "" and not seen
    with pytest.raises(ValueError, match="needs 3 translations, got 1"):
        HtmlJob(translator, docs).finish(mixed[:1])


def test_hostile_snippets_keep_their_tag_sequence_and_untouched_regions(translator):
    snippets = hostile_snippets(40, seed=7)
    answers = translator.translate(snippets, format="html", **FAST)
    assert len(answers) == len(snippets)
    for source, answer in zip(snippets, answers, strict=True):
        assert not any("returned unchanged" in w for w in answer.warnings)
        assert check_answer(source, answer.text) == (True, True), source


MALFORMED = [
    "<p>Ein <b>Hund <i>läuft</b> schnell</i> weg",  # misnested, unclosed
    "</i></span>Ein Mann</div></p>",  # stray end tags
    "<table>Ein Mann<tr><td>läuft<td>schnell</table>",  # text fostered out of the table
    "<p>Ein Hund <!-- nie geschlossen",
    "<p>Ein Hund <b",  # cut off inside a tag
    "<<>><&>&amp &#xZZ; &unknown; < p>Text",
    "Ein\x00Mann\r\nläuft\rweg\ufeff",
    "<b>" * 3000 + "Tief" + "</b>" * 10,  # deep nesting
    "<svg><p>Ein Mann</p><foreignObject><b>Hund</b></foreignObject></svg>",
    "</br><p></p></p><body class=x><html lang=de>Ein Mann<frameset>",
    "<li>Ein<li>Zwei<dd>Drei<option>Vier<select><option>Fünf</select>",
    "<a href='x'>Ein <a href='y'>Hund</a> <image src=z> <isindex prompt=q>",
]


def test_malformed_html_is_answered(translator):
    answers = translator.translate(MALFORMED, format="html", **FAST)
    assert len(answers) == len(MALFORMED)
    for source, answer in zip(MALFORMED, answers, strict=True):
        assert not any("returned unchanged" in w for w in answer.warnings), answer.warnings
        assert tag_sequence(answer.text) == tag_sequence(source), source[:80]


def test_one_output_per_input_empty_ones_included(translator):
    docs = ["", "<p>Ein Mann läuft.</p>", "   \n ", "<p></p>", "<!-- nur ein Kommentar -->",
            "<br>", "Zwei Hunde."]
    out = translator.translate(docs, format="html", **FAST)
    assert [o.text for o in out][:1] == [""] and len(out) == len(docs)
    assert out[2].text == "   \n " and out[3].text == "<p></p>"
    assert out[4].text == docs[4] and out[5].text == "<br>"
    assert out[0].score is None and out[1].score is not None and out[6].text
    assert out[1].text.startswith("<p>") and out[1].text.endswith("</p>")


def test_entities_written_as_the_input_wrote_them(translator):
    seg = next(p for p in layout(*parse("<p>Tom &amp; Jerry&nbsp;&copy; &lt;3</p>"))
               if isinstance(p, Segment))
    assert seg.text == "Tom & Jerry\xa0© <3"
    assert seg.escape("a & b\xa0© <c>") == "a &amp; b&nbsp;&copy; &lt;c&gt;"


def test_tags_follow_the_words_they_wrapped():
    # "Ein <b>roter</b> Hund <i>läuft</i> ." -> "A dog <i>runs</i> ." with "red" placed by
    # the alignment, not by position; the output reorders adjective and noun.
    (seg,) = [p for p in layout(*parse("Ein <b>roter</b> Hund <i>läuft schnell</i>."))
              if isinstance(p, Segment)]
    src = units(seg.text, [e.offset for e in seg.events])
    bounds = [sum(1 for _, end in src if end <= e.offset) for e in seg.events]
    target = "A dog that is red runs fast."
    tgt = units(target)
    # source units: Ein roter Hund läuft schnell . ; one-hot alignment of each output word
    align = [0, 2, 2, 2, 1, 3, 4, 5]
    m = np.zeros((len(tgt), len(src)))
    m[np.arange(len(tgt)), align] = 1.0
    out = render(seg, target, tgt, place(m, seg.events, bounds))
    assert out == "A dog that is <b>red</b> <i>runs fast</i>."


def test_tags_keep_their_order_and_nesting_when_words_cross():
    (seg,) = [p for p in layout(*parse("<b>Ein <i>großer</i> Hund</b> <u>bellt</u>"))
              if isinstance(p, Segment)]
    src = units(seg.text, [e.offset for e in seg.events])
    bounds = [sum(1 for _, end in src if end <= e.offset) for e in seg.events]
    target = "barks a big dog"  # "bellt" first: order and nesting must stay the input's
    tgt = units(target)
    m = np.zeros((4, 4))
    m[[0, 1, 2, 3], [3, 0, 1, 2]] = 1.0
    out = render(seg, target, tgt, place(m, seg.events, bounds))
    assert tag_sequence(out) == tag_sequence("<b>x <i>y</i> z</b> <u>w</u>")
    assert plain_text(out) == target
    assert Counter(out.count(t) for t in ("<b>", "<i>", "<u>")) == Counter({1: 3})


def test_format_errors_are_one_line(translator, monkeypatch):
    with pytest.raises(HtmlError, match="format: 'xml' is not one of text, html"):
        translator.translate(["x"], format="xml")
    with pytest.raises(HtmlError, match="attention: not available with format html"):
        translator.translate(["<p>x</p>"], format="html", attention=True)
    package = sys.modules["translate.inference"]
    for name in [m for m in sys.modules if m.startswith("translate.inference.html_")]:
        monkeypatch.delitem(sys.modules, name)
        monkeypatch.delattr(package, name.rsplit(".", 1)[1], raising=False)
    monkeypatch.setitem(sys.modules, "html5lib", None)  # as when it is not installed
    with pytest.raises(HtmlError, match=r"pip install 'translate\[html\]'"):
        translator.translate(["<p>x</p>"], format="html")


def test_infer_input_format_html(trained_run, tmp_path, capsys):
    docs = ['<p>Ein <b>Hund</b> läuft <code>x &lt; y</code>.</p>', "",
            '<ul><li>Zwei <a href="a?b=1&amp;c=2">Männer</a><li>Eine Frau</ul>']
    src = tmp_path / "in.html"
    src.write_text("\n".join(docs) + "\n", encoding="utf-8")
    out = tmp_path / "out.html"
    with pytest.raises(SystemExit) as exc:
        main(["--model", str(trained_run), "--input", str(src), "--output", str(out),
              "--input-format", "html", "--beam", "1"])
    assert exc.value.code == 0
    lines = out.read_text(encoding="utf-8").split("\n")
    assert len(lines) == len(docs) + 1 and lines[1] == "" and lines[-1] == ""
    assert "<code>x &lt; y</code>" in lines[0] and '<a href="a?b=1&amp;c=2">' in lines[2]
    for d, line in zip(docs, lines, strict=False):
        assert tag_sequence(line) == tag_sequence(d)

    page = tmp_path / "page.html"
    page.write_text("<!DOCTYPE html>\n<html>\n<body>\n" + "\n".join(docs) + "\n</body>\n"
                    "</html>\n", encoding="utf-8")
    with pytest.raises(SystemExit) as exc:
        main(["--model", str(trained_run), "--input", str(page), "--input-format", "html",
              "--whole-file", "--beam", "1"])
    assert exc.value.code == 0
    written = capsys.readouterr().out
    assert written.startswith("<!DOCTYPE html>\n<html>\n<body>\n")
    assert written.endswith("\n</body>\n</html>\n")
    assert tag_sequence(written) == tag_sequence(page.read_text(encoding="utf-8"))

    with pytest.raises(SystemExit) as exc:
        main(["--model", str(trained_run), "--input", str(page), "--whole-file"])
    assert exc.value.code == 2
    assert capsys.readouterr().err.strip().endswith("--whole-file needs --input-format html")
