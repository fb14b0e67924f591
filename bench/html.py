"""HTML translation: markup kept on 1,000 hostile snippets, tag placement on Multi30k; ~10 min.

(a) Hostile snippets, generated with a fixed seed (nested, misnested and unclosed inline
tags, attributes with entities and both quotes, void elements, comments, stray end tags,
untouched ``code``/``pre``/``script``/``style``/``textarea``/``translate="no"``/
``notranslate``, emoji, placeholders like ``%s`` and ``{name}``, German words). For every
answer: its tag sequence (every element's name and attributes, in document order, with the
comments) equals the input's, both after html5lib's repair; and every untouched region of
the input is in the answer byte for byte: each start tag and comment as written, each
untouched element's whole text as written, each run of whitespace between two blocks.
Printed: how many answers pass each check (the target: all).

(b) Multi30k test2016 de→en, one or two inline tags (``<b>``, ``<em>``, ``<a href="...">``)
around random spans of one to three words of each source sentence (fixed seed). BLEU
(sacrebleu, detokenized) of the answers with their tags removed, against the plain-text
translations' BLEU (target: no more than 0.5 below), and tag placement accuracy (target at
least 0.8), defined as follows. The words of an answer (tags removed: for the attention
and proportional answers, exactly the model's own plain translation) are aligned to the
source sentence's words by a lexical alignment that knows nothing of the model:
sentence-level Dice between German and English words counted over Multi30k's training
pairs, and competitive linking (Melamed, 2000) of the content words, strongest pair first
(ties: nearer the diagonal), each word linked at most once, pairs below Dice 0.05 left
out. A tag's *gold words* are the answer's words linked to a word it wrapped in the
source. A placement is right when the tag wraps every gold word and no word linked to a
source word outside it (unlinked words, such as articles, may be in or out). A tag with no
gold word (it wrapped only function words, or nothing it wrapped is linked) is not judged;
how many were not is printed.
Why this check: it asks of a tag what a reader would (the words that translate the
wrapped words are wrapped, and no word that translates another), and it is independent of
the placement, which is made from the attention, so judging it by the attention would be
circular. The first check tried, the span translated alone, was too noisy to judge by: a
model trained on whole captions answers "Ein" with "A man in a hand."

The attention alignment is compared with two alternatives: ``proportional`` (each output
word aligned to the source word at the same relative position, the same placement program)
and ``fragments`` (the text between tags translated separately, each tag around its
fragment's translation, as a naive HTML mode would do).

    python -m bench html --model RUN_DIR [--snippets 1000] [--seed 1234] [--beam 5]
                         [--hostile-beam 1] [--part a|b|both]
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "multi30k"

# --------------------------------------------------------------------------- snippets

_PLACEHOLDERS = ["%s", "%d", "{name}", "{0}", "%(count)d", "$1", "{{user}}", ":smile:"]
_EMOJI = ["😀", "👍🏽", "🇩🇪", "👩‍👩‍👧", "❤️", "✓"]
_ENTITIES = ["&amp;", "&lt;", "&gt;", "&nbsp;", "&copy;", "&#169;", "&#x1F600;", "&quot;",
             "&eacute;", "&amp"]
_ATTRS = ['href="https://example.com/?a=1&amp;b=2&c=3"', "title='Er sagte \"hallo\" &amp; ging'",
          "data-x=unquoted", 'class="x  y"', 'title="a &lt;b&gt; &#39;c&#39;"',
          "id=a id=b", 'style="color: red; font-family: \'Arial\'"', "lang=de", "hidden"]
_INLINE = ["b", "i", "em", "strong", "span", "a", "u", "s", "sub", "sup", "small", "mark",
           "abbr", "q", "B", "Em", "my-tag"]
_UNTOUCHED_INLINE = ['<code>x = a &lt; b &amp;&amp; c</code>', "<kbd>Strg</kbd>",
                     '<span translate="no">Köln &amp; Bonn</span>',
                     '<span class="brand notranslate">GitHub</span>',
                     "<textarea>\n roh &amp; <b>fett</b></textarea>",
                     '<script>if (a < b && c > d) { x = "</p>"; }</script>',
                     "<style>p > b { content: '&'; }</style>"]
_UNTOUCHED_BLOCK = ["<pre>  eingerückt\n\tTabulator &lt;x&gt;\n</pre>",
                    '<div translate="no"><p>Nicht <b>übersetzen</b></p></div>',
                    '<pre class="notranslate"><code>def f():\n    return 1\n</code></pre>']
_VOIDS = ['<img src="a.png" alt="ein &quot;Bild&quot;">', "<br>", "<br/>", "<wbr>",
          '<input type="text" value="&lt;x&gt;">', "<img src=b.png alt='x'/>"]
_COMMENTS = ["<!-- Kommentar -->", "<!---->", "<!-- <b>nicht</b> -->", "<!--x-->"]


def _vocabulary(data: Path) -> list[str]:
    path = data / "test_2016_flickr.de"
    text = path.read_text(encoding="utf-8") if path.is_file() else "Ein Hund läuft schnell"
    return sorted({w.strip(".,!?") for w in text.split() if w.strip(".,!?")})[:3000]


def _inline(rng: random.Random, vocab: list[str], depth: int) -> str:
    out: list[str] = []
    for _ in range(rng.randint(2, 7)):
        r = rng.random()
        if r < 0.45:
            out.append(" ".join(rng.choice(vocab) for _ in range(rng.randint(1, 3))))
        elif r < 0.52:
            out.append(rng.choice(_PLACEHOLDERS))
        elif r < 0.57:
            out.append(rng.choice(_EMOJI))
        elif r < 0.62:
            out.append(rng.choice(_ENTITIES))
        elif r < 0.80 and depth < 3:
            name = rng.choice(_INLINE)
            attrs = "".join(" " + rng.choice(_ATTRS) for _ in range(rng.randint(0, 2)))
            close = "" if rng.random() < 0.08 else f"</{name}>"  # unclosed
            out.append(f"<{name}{attrs}>{_inline(rng, vocab, depth + 1)}{close}")
        elif r < 0.86:
            out.append(rng.choice(_UNTOUCHED_INLINE))
        elif r < 0.91:
            out.append(rng.choice(_VOIDS))
        elif r < 0.95:
            out.append(rng.choice(_COMMENTS))
        elif r < 0.975:  # misnested
            a, b = rng.sample(["b", "i", "em", "strong", "a"], 2)
            w = [rng.choice(vocab) for _ in range(3)]
            out.append(f"<{a}>{w[0]} <{b}>{w[1]}</{a}> {w[2]}</{b}>")
        else:
            out.append(rng.choice(["</i>", "</span>", "</div>", "<span/>", "</p>"]))
    glue = [rng.choice([" ", " ", " ", "", "\n", "  "]) for _ in out]
    return "".join(g + piece for g, piece in zip(glue, out, strict=True)).lstrip(" ")


def _block(rng: random.Random, vocab: list[str]) -> str:
    body = _inline(rng, vocab, 0)
    kind = rng.randrange(12)
    if kind < 3:
        return f"<p>{body}</p>" if rng.random() < 0.8 else f"<p>{body}"
    if kind == 3:
        return f"<div class='c'>{body}<p>{_inline(rng, vocab, 0)}</p>{_inline(rng, vocab, 1)}</div>"
    if kind == 4:
        items = "".join(f"\n  <li>{_inline(rng, vocab, 1)}" + ("</li>" if rng.random() < .7
                                                              else "")
                        for _ in range(rng.randint(1, 3)))
        return f"<ul>{items}\n</ul>"
    if kind == 5:
        return f"<table><tr><td>{body}<td>{_inline(rng, vocab, 1)}</table>"
    if kind == 6:
        return f"<h{rng.randint(1, 6)}>{body}</h{rng.randint(1, 6)}>"
    if kind == 7:
        return rng.choice(_UNTOUCHED_BLOCK)
    if kind == 8:
        return f"<blockquote>\n{body}\n</blockquote>"
    return body


def hostile_snippets(n: int, seed: int = 1234, data: Path = DEFAULT_DATA) -> list[str]:
    """``n`` hostile HTML snippets, the same for the same seed."""
    rng, vocab = random.Random(seed), _vocabulary(data)
    out = []
    for _ in range(n):
        blocks = [_block(rng, vocab) for _ in range(rng.randint(1, 4))]
        snippet = rng.choice(["", "\n", "\n\n  ", " "]).join(blocks)
        if rng.random() < 0.05:
            snippet = "<!DOCTYPE html>\n<html><body>" + snippet + "</body></html>\n"
        if rng.random() < 0.03:
            snippet += rng.choice(["<b", "<!-- offen", "<a href='x"])  # cut off at the end
        out.append(snippet)
    return out


# --------------------------------------------------------------------------- checks


def tag_sequence(html: str) -> list[tuple]:
    """Every element (name, attributes) and comment of ``html`` in document order, with
    the end of each element, after html5lib's repair."""
    from translate.inference.html_nodes import Comment, Element
    from translate.inference.html_tree import parse

    doc, _ = parse(html)
    out: list[tuple] = []
    stack: list[tuple[object, bool]] = [(c, False) for c in reversed(doc.childNodes)]
    while stack:
        node, closing = stack.pop()
        if closing:
            out.append(("end", node.name))
        elif isinstance(node, Element):
            out.append(("start", node.name, tuple(sorted(map(str, node.attributes.items())))))
            stack.append((node, True))
            stack.extend((c, False) for c in reversed(node.childNodes))
        elif isinstance(node, Comment):
            out.append(("comment", node.data))
    return out


def untouched_regions(html: str) -> list[str]:
    """What an answer must hold byte for byte (see the module's docstring)."""
    from translate.inference.html_nodes import Comment, Element, Text
    from translate.inference.html_segments import BLOCK, untouched
    from translate.inference.html_tree import parse
    from translate.inference.html_write import text_runs, write

    doc, src = parse(html)
    regions: list[str] = []
    stack: list[tuple[object, bool]] = [(doc, False)]
    while stack:
        node, inside = stack.pop()
        if isinstance(node, Element):
            if node.start is not None:
                regions.append(src.raw(node.start))
            if not inside and node.name != "#document" and untouched(node):
                buf: list[str] = []
                write(node, src, buf)
                regions.append("".join(buf))
                inside = True
            kids = node.childNodes
            for k, child in enumerate(kids):
                stack.append((child, inside))
                if isinstance(child, Text) and not child.data.strip(" \t\n\r\f") and all(
                        0 <= j < len(kids) and isinstance(kids[j], Element)
                        and kids[j].name in BLOCK for j in (k - 1, k + 1)):
                    regions.extend(raw for _, raw in text_runs(child, src) if raw)
        elif isinstance(node, Comment) and node.span is not None:
            raw = src.raw(node.span)
            if raw.endswith(">"):
                regions.append(raw)
    return regions


def check_answer(source: str, answer: str) -> tuple[bool, bool]:
    """(tag sequence kept, every untouched region kept) for one answer."""
    same_tags = tag_sequence(source) == tag_sequence(answer)
    need = Counter(untouched_regions(source))
    kept = all(answer.count(region) >= n for region, n in need.items())
    return same_tags, kept


def hostile(translator, n: int, seed: int, beam: int, data: Path) -> dict:
    from translate.inference.html import translate_html

    snippets = hostile_snippets(n, seed, data)
    start = time.perf_counter()
    answers = translate_html(translator, snippets, beam=beam)
    seconds = time.perf_counter() - start
    tags = regions = fallbacks = 0
    failed: list[int] = []
    for i, (src, ans) in enumerate(zip(snippets, answers, strict=True)):
        same, kept = check_answer(src, ans.text)
        tags += same
        regions += kept
        fallbacks += any("returned unchanged" in w for w in ans.warnings)
        if not (same and kept):
            failed.append(i)
    return {"snippets": n, "seed": seed, "tag_sequence_kept": tags, "untouched_kept": regions,
            "fallbacks": fallbacks, "failed": failed[:20], "seconds": round(seconds, 2)}


# --------------------------------------------------------------------------- multi30k

_FUNCTION = frozenset("""a an the of in on at to for with by from and or but is are was were
be been being it its this that these those there their his her he she they them him we you
i as into onto over under up down out off near while has have had do does some one another
other each who which what""".split())
_FUNCTION_DE = frozenset("""ein eine einer einem einen eines der die das dem den des und oder
mit in im auf am an ist sind von vom zu zum zur bei für aus vor hinter über unter neben
sich sein seine ihr ihre es er sie wir ich noch nach um durch gegen als wie""".split())
_TAGS = [("<b>", "</b>"), ("<em>", "</em>"),
         ('<a href="https://example.com/?q=1&amp;lang=de">', "</a>")]
_WORD = re.compile(r"\w+(?:['’\-]\w+)*")
_MIN_DICE = 0.05


def words(text: str) -> list[str]:
    return [m.group().lower() for m in _WORD.finditer(text)]


def tag_sentence(rng: random.Random, sentence: str) -> tuple[str, list[tuple[int, int]]]:
    """``sentence`` with one or two tags around random spans of 1-3 words (not
    overlapping), and the spans as word index ranges ``[first, end)``."""
    found = [m.span() for m in _WORD.finditer(sentence)]
    if not found:
        return sentence, []
    spans: list[tuple[int, int]] = []
    for _ in range(rng.choice([1, 2])):
        length = rng.randint(1, min(3, len(found)))
        first = rng.randrange(len(found) - length + 1)
        span = (first, first + length)
        if all(span[1] <= a or span[0] >= b for a, b in spans):
            spans.append(span)
    spans.sort()
    out, at = [], 0
    for a, b in spans:
        start, end = found[a][0], found[b - 1][1]
        open_tag, close_tag = rng.choice(_TAGS)
        out += [sentence[at:start], open_tag, sentence[start:end], close_tag]
        at = end
    out.append(sentence[at:])
    return "".join(out), spans


class Lexicon:
    """Sentence-level Dice between German and English words of a parallel corpus, counted
    only for the words ``wanted``: an alignment that knows nothing of the model."""

    def __init__(self, src_lines: list[str], tgt_lines: list[str], src_wanted: set[str],
                 tgt_wanted: set[str]) -> None:
        self.src, self.tgt, self.pair = Counter(), Counter(), Counter()
        for a, b in zip(src_lines, tgt_lines, strict=True):
            sw = {w for w in words(a) if w in src_wanted}
            tw = {w for w in words(b) if w in tgt_wanted}
            self.src.update(sw)
            self.tgt.update(tw)
            self.pair.update((x, y) for x in sw for y in tw)

    def dice(self, s: str, t: str) -> float:
        both = self.pair[(s, t)]
        return 2 * both / (self.src[s] + self.tgt[t]) if both else 0.0

    def links(self, source: str, target: str) -> dict[int, int]:
        """Competitive linking (Melamed, 2000) of the content words: target word index ->
        source word index, strongest pairs first, each word linked at most once."""
        sw, tw = words(source), words(target)
        pairs = sorted(((self.dice(s, t), -abs(i / len(sw) - j / len(tw)), i, j)
                        for i, s in enumerate(sw) if s not in _FUNCTION_DE
                        for j, t in enumerate(tw) if t not in _FUNCTION), reverse=True)
        linked_s: set[int] = set()
        out: dict[int, int] = {}
        for d, _, i, j in pairs:  # ties: the pair nearer the diagonal first
            if d < _MIN_DICE:
                break
            if i not in linked_s and j not in out:
                linked_s.add(i)
                out[j] = i
        return out


def wrapped_words(html: str) -> tuple[list[str], list[set[int]]]:
    """An answer's words (tags removed) and, for each ``b``/``em``/``a`` in order, the
    indices of the words it wraps."""
    from translate.inference.html_nodes import Element, Text
    from translate.inference.html_tree import parse

    doc, _ = parse(html)
    text, wraps, ranges = "", [], []
    stack: list[tuple[object, bool]] = [(doc, False)]
    while stack:
        node, closing = stack.pop()
        if closing:
            ranges[wraps.pop()][1] = len(text)
        elif isinstance(node, Text):
            text += node.data
        elif isinstance(node, Element):
            if node.name in ("b", "em", "a"):
                wraps.append(len(ranges))
                ranges.append([len(text), len(text)])
                stack.append((node, True))
            stack.extend((c, False) for c in reversed(node.childNodes))
    spans = [m.span() for m in _WORD.finditer(text)]
    inside = [{k for k, (a, b) in enumerate(spans) if a >= lo and b <= hi} for lo, hi in ranges]
    return [text[a:b].lower() for a, b in spans], inside


def plain_text(html: str) -> str:
    from translate.inference.html_nodes import Text
    from translate.inference.html_tree import parse

    doc, _ = parse(html)
    parts, stack = [], [doc]
    while stack:
        node = stack.pop()
        if isinstance(node, Text):
            parts.append(node.data)
        else:
            stack.extend(reversed(getattr(node, "childNodes", [])))
    return " ".join("".join(parts).split())


def judge(links: dict[int, int], span: tuple[int, int], inside: set[int]) -> bool | None:
    """Whether a tag around source words ``span`` that wraps answer words ``inside`` is
    right (see the module's docstring); None when no answer word is linked to the span."""
    gold = {j for j, i in links.items() if span[0] <= i < span[1]}
    if not gold:
        return None
    other = {j for j, i in links.items() if not span[0] <= i < span[1]}
    return gold <= inside and not inside & other


def multi30k(translator, data: Path, seed: int, beam: int, limit: int) -> dict:
    """Part (b): BLEU with tags removed and placement accuracy, for each method."""
    from translate.inference.html import translate_html
    from translate.tracking.metrics import bleu_chrf

    sources = (data / "test_2016_flickr.de").read_text(encoding="utf-8").splitlines()
    refs = (data / "test_2016_flickr.en").read_text(encoding="utf-8").splitlines()
    if limit:
        sources, refs = sources[:limit], refs[:limit]
    rng = random.Random(seed)
    tagged, spans = zip(*(tag_sentence(rng, s) for s in sources), strict=True)
    start = time.perf_counter()
    plain = [r.text for r in translator.translate(sources, beam=beam)]
    plain_seconds = time.perf_counter() - start
    base = bleu_chrf(plain, refs)
    answers: dict[str, list[str]] = {}
    seconds: dict[str, float] = {}
    for method in ("attention", "proportional", "fragments"):
        start = time.perf_counter()
        if method == "fragments":
            answers[method] = _fragments(translator, tagged, beam)
        else:
            answers[method] = [r.text for r in translate_html(
                translator, list(tagged), beam=beam, align=method)]
        seconds[method] = time.perf_counter() - start
    read = {m: [wrapped_words(a) for a in texts] for m, texts in answers.items()}
    lexicon = Lexicon(
        (data / "train.de").read_text(encoding="utf-8").splitlines(),
        (data / "train.en").read_text(encoding="utf-8").splitlines(),
        {w for s in sources for w in words(s)},
        {w for rows in read.values() for ws, _ in rows for w in ws})
    out = {"sentences": len(sources), "tags": sum(map(len, spans)),
           "plain_bleu": round(base["bleu"], 2), "plain_seconds": round(plain_seconds, 2),
           "bleu_signature": base["bleu_signature"], "methods": {}}
    for method, texts in answers.items():
        stripped = [plain_text(t) for t in texts]
        bleu = bleu_chrf(stripped, refs)["bleu"]
        right = judged = 0
        for source, row, (ws, inside) in zip(sources, spans, read[method], strict=True):
            links = lexicon.links(source, " ".join(ws))
            for k, span in enumerate(row):
                verdict = judge(links, span, inside[k] if k < len(inside) else set())
                if verdict is not None:
                    judged += 1
                    right += verdict
        out["methods"][method] = {
            "bleu": round(bleu, 2), "bleu_delta": round(bleu - base["bleu"], 2),
            "placement_accuracy": round(right / max(judged, 1), 4), "judged": judged,
            "not_judged": out["tags"] - judged,
            "same_text_as_plain": sum(a == " ".join(b.split())
                                      for a, b in zip(stripped, plain, strict=True)),
            "seconds": round(seconds[method], 2)}
    return out


_TAG = re.compile(r"<[^>]+>")


def _fragments(translator, tagged: tuple[str, ...], beam: int) -> list[str]:
    """The alternative: the text between tags translated separately, joined with spaces."""
    import html as std_html

    rows = []
    for sentence in tagged:
        parts, at = [], 0
        for m in _TAG.finditer(sentence):
            parts.append(("text", sentence[at:m.start()]))
            parts.append(("tag", m.group()))
            at = m.end()
        parts.append(("text", sentence[at:]))
        rows.append(parts)
    texts = [std_html.unescape(p).strip() for row in rows for kind, p in row if kind == "text"]
    done = iter(r.text for r in translator.translate(texts, beam=beam))
    out = []
    for row in rows:
        pieces = []
        for kind, p in row:
            if kind == "tag":
                pieces.append(p)
            else:
                t = next(done)
                if t:
                    pieces.append(std_html.escape(t, quote=False))
        text = ""
        for k, piece in enumerate(pieces):  # spaced, except inside a tag's edges
            opening = k and pieces[k - 1].startswith("<") and not pieces[k - 1].startswith("</")
            text += ("" if not k or opening or piece.startswith("</") else " ") + piece
        out.append(text)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="a de→en run directory")
    p.add_argument("--data", default=str(DEFAULT_DATA), help="the Multi30k folder")
    p.add_argument("--snippets", type=int, default=1000, help="hostile snippets (a)")
    p.add_argument("--sentences", type=int, default=0,
                   help="test2016 sentences for (b) (0: all 1,000)")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--beam", type=int, default=5, help="beam size for (b)")
    p.add_argument("--hostile-beam", type=int, default=1,
                   help="beam size for (a), which checks markup, not translations")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--part", choices=("a", "b", "both"), default="both")
    args = p.parse_args()
    import torch

    from translate.inference.translator import Translator

    torch.set_num_threads(args.threads)
    translator = Translator.load(args.model, device="cpu")
    data = Path(args.data)
    report = {"model": args.model, "beam": args.beam, "hostile_beam": args.hostile_beam}
    if args.part in ("a", "both"):
        report["hostile"] = hostile(translator, args.snippets, args.seed, args.hostile_beam,
                                    data)
        h = report["hostile"]
        print(f"(a) {h['snippets']} hostile snippets: tag sequence kept {h['tag_sequence_kept']}"
              f", untouched regions kept {h['untouched_kept']}, fallbacks {h['fallbacks']} "
              f"({h['seconds']} s)", file=sys.stderr)
    if args.part in ("b", "both"):
        report["multi30k"] = multi30k(translator, data, args.seed, args.beam, args.sentences)
        m = report["multi30k"]
        print(f"(b) {m['sentences']} sentences, {m['tags']} tags; plain BLEU "
              f"{m['plain_bleu']}", file=sys.stderr)
        for name, r in m["methods"].items():
            print(f"    {name:<12} BLEU {r['bleu']:6.2f} ({r['bleu_delta']:+.2f})  placement "
                  f"{r['placement_accuracy']:.3f} of {r['judged']} judged "
                  f"({r['not_judged']} not)  {r['seconds']} s", file=sys.stderr)
    print(json.dumps(report, ensure_ascii=False))


if __name__ == "__main__":
    main()
