"""Tokenizer on the real corpora: lossless round trips, fixed special ids, save/load, options."""

from __future__ import annotations

import gettext
import json
from pathlib import Path

import pytest

from translate.config import ConfigError, TokenizerConfig
from translate.data.tokenizer import BOS_ID, EOS_ID, PAD_ID, UNK_ID, Tokenizer, TokenizerError

SPECIALS = {UNK_ID, BOS_ID, EOS_ID, PAD_ID}
UNSEEN = [
    "Ein Hund 🐕 rennt 🏃‍♂️ über die Wiese 🌳.",
    "東京の猫は寝ている。",
    "Собака бежит по траве.",
    "Κάτι ελληνικό — και ﬁ, ½, Ⅻ, ＡＢＣ",
    "Tab\tgetrennt  und  doppelt   gespaced",
    "  führende und folgende Leerzeichen  ",
    "NBSP\u00a0und\u200bzero-width, é vs e\u0301, Ä vs A\u0308",
    "<s> </s> <pad> <unk> look like specials but are text",
    "\x01 control \x7f chars",
    "",
]


def read_lines(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def gettext_strings(lang: str = "de", limit: int = 0) -> list[str]:
    """msgid/msgstr strings of the machine's catalogs: the text the default config trains on."""
    out: list[str] = []
    for path in sorted(Path(f"/usr/share/locale/{lang}/LC_MESSAGES").glob("*.mo")):
        try:
            with path.open("rb") as fh:
                catalog = gettext.GNUTranslations(fh)._catalog
        except (OSError, UnicodeDecodeError):
            continue  # a catalog in a legacy charset
        for key, value in catalog.items():
            for s in (key[0] if isinstance(key, tuple) else key, value):
                if isinstance(s, str) and s and "\n" not in s:
                    out.append(s)
    return out[:limit] if limit else out


def assert_round_trip(tok: Tokenizer, lines: list[str], where: str) -> None:
    sides = [(tok.encode_src, tok.decode_src)]
    if tok.tgt_model is not tok.src_model:  # a joint tokenizer is one model: check it once
        sides.append((tok.encode_tgt, tok.decode_tgt))
    for encode, decode in sides:
        ids = encode(lines)
        assert len(ids) == len(lines)
        used = {i for row in ids for i in row}
        assert not used & SPECIALS, f"{where}: special ids {used & SPECIALS} in encodings"
        back = decode(ids)
        bad = [(a, b) for a, b in zip(lines, back, strict=True) if a != b]
        assert not bad, f"{where}: {len(bad)} lines do not round-trip, e.g. {bad[:3]}"


@pytest.fixture(scope="module")
def m30k_train(multi30k: Path) -> tuple[list[str], list[str]]:
    return read_lines(multi30k / "train.de"), read_lines(multi30k / "train.en")


@pytest.fixture(scope="module")
def joint_dir(m30k_train, tmp_path_factory) -> Path:
    src, tgt = m30k_train
    out = tmp_path_factory.mktemp("tok") / "tokenizer"
    Tokenizer.train(TokenizerConfig(vocab_size=4000), src[:10000], tgt[:10000], out)
    return out


@pytest.fixture(scope="module")
def joint(joint_dir: Path) -> Tokenizer:
    return Tokenizer.load(joint_dir)


def test_special_ids_fixed_and_recorded(joint: Tokenizer, joint_dir: Path):
    assert (joint.unk_id, joint.bos_id, joint.eos_id, joint.pad_id) == (0, 1, 2, 3)
    for sp in (joint.src_model, joint.tgt_model):
        assert [sp.id_to_piece(i) for i in range(4)] == ["<unk>", "<s>", "</s>", "<pad>"]
        assert all(sp.is_control(i) for i in (BOS_ID, EOS_ID, PAD_ID))
    meta = json.loads((joint_dir / "tokenizer.json").read_text())
    assert meta["joint"] is True and meta["model_type"] == "unigram"
    assert (meta["unk_id"], meta["bos_id"], meta["eos_id"], meta["pad_id"]) == (0, 1, 2, 3)
    assert meta["src_vocab_size"] == meta["tgt_vocab_size"] == joint.src_vocab_size == 4000
    assert meta["src_model"] == meta["tgt_model"] == "spm.model"
    assert joint.joint and joint.src_model is joint.tgt_model


def test_round_trip_every_multi30k_file(joint: Tokenizer, multi30k: Path):
    """All splits, all four languages (fr/cs characters were never seen in training)."""
    files = sorted(multi30k.glob("*.*"))
    assert len(files) == 12
    for path in files:
        assert_round_trip(joint, read_lines(path), str(path))


def test_round_trip_every_multidomain_file(joint: Tokenizer, multidomain: Path):
    """News, IT with mojibake and runs of spaces, chat, legal, medical, ... line by line."""
    files = sorted(multidomain.glob("*/*.*"))
    assert len(files) == 32
    for path in files:
        assert_round_trip(joint, read_lines(path), str(path))


@pytest.mark.host_dependent  # reads this machine's gettext catalogs
def test_round_trip_default_gettext_corpus(joint: Tokenizer):
    strings = gettext_strings("de")
    assert len(strings) > 5000, "expected the machine's German gettext catalogs"
    assert_round_trip(joint, strings, "/usr/share/locale/de/LC_MESSAGES/*.mo")


def test_unseen_characters_use_bytes_not_unk(joint: Tokenizer):
    assert_round_trip(joint, UNSEEN, "unseen characters")
    ids = joint.encode_src(["🐕 東京"])[0]
    pieces = [joint.src_model.id_to_piece(i) for i in ids]
    assert any(p.startswith("<0x") for p in pieces), pieces  # byte fallback did the work


def test_decode_drops_bos_pad_and_stops_at_eos(joint: Tokenizer):
    ids = joint.encode_tgt(["A dog runs."])[0]
    rows = [[BOS_ID, *ids, EOS_ID, PAD_ID, PAD_ID], [*ids, EOS_ID, *ids], [PAD_ID], []]
    assert joint.decode_tgt(rows) == ["A dog runs.", "A dog runs.", "", ""]
    assert joint.decode_src([]) == []
    assert joint.encode_src([]) == []
    with pytest.raises(TypeError):
        joint.encode_src("not a list")


def test_save_load_identical(joint: Tokenizer, joint_dir: Path, multi30k: Path):
    lines = read_lines(multi30k / "val.de")
    again = Tokenizer.load(joint_dir)
    assert again.encode_src(lines) == joint.encode_src(lines)
    assert again.encode_tgt(lines) == joint.encode_tgt(lines)
    assert (again.src_vocab_size, again.tgt_vocab_size) == (4000, 4000)


def test_load_errors_name_the_path(joint_dir: Path, tmp_path: Path):
    missing = tmp_path / "nope"
    with pytest.raises(TokenizerError, match=str(missing)):
        Tokenizer.load(missing)
    broken = tmp_path / "broken"
    broken.mkdir()
    with pytest.raises(TokenizerError, match="tokenizer.json"):
        Tokenizer.load(broken)
    (broken / "tokenizer.json").write_text((joint_dir / "tokenizer.json").read_text())
    with pytest.raises(TokenizerError, match="spm.model"):
        Tokenizer.load(broken)  # model file missing
    (broken / "spm.model").write_bytes(b"this is not a sentencepiece model")
    with pytest.raises(TokenizerError, match="spm.model"):
        Tokenizer.load(broken)
    (broken / "tokenizer.json").write_text("{not json")
    with pytest.raises(TokenizerError, match="corrupt"):
        Tokenizer.load(broken)


def test_separate_models(m30k_train, tmp_path: Path, multi30k: Path):
    src, tgt = m30k_train
    cfg = TokenizerConfig(vocab_size=2000, joint=False)
    tok = Tokenizer.train(cfg, src[:5000], tgt[:5000], tmp_path / "tok", log=lambda _: None)
    assert not tok.joint and tok.src_model is not tok.tgt_model
    assert tok.src_vocab_size == tok.tgt_vocab_size == 2000
    meta = json.loads((tmp_path / "tok" / "tokenizer.json").read_text())
    assert (meta["src_model"], meta["tgt_model"]) == ("src.model", "tgt.model")
    assert meta["joint"] is False
    de, en = read_lines(multi30k / "val.de"), read_lines(multi30k / "val.en")
    # Each model fits its own language: German is shorter in German pieces, and vice versa.
    assert sum(map(len, tok.encode_src(de))) < sum(map(len, tok.encode_tgt(de)))
    assert sum(map(len, tok.encode_tgt(en))) < sum(map(len, tok.encode_src(en)))
    assert_round_trip(tok, de + en + UNSEEN, "separate models")
    loaded = Tokenizer.load(tmp_path / "tok")
    assert loaded.encode_src(de) == tok.encode_src(de)
    assert loaded.encode_tgt(en) == tok.encode_tgt(en)


def test_bpe_option(m30k_train, tmp_path: Path, multi30k: Path):
    src, tgt = m30k_train
    cfg = TokenizerConfig(model_type="bpe", vocab_size=2000)
    tok = Tokenizer.train(cfg, src[:5000], tgt[:5000], tmp_path / "bpe", log=lambda _: None)
    meta = json.loads((tmp_path / "bpe" / "tokenizer.json").read_text())
    assert meta["model_type"] == "bpe"
    sp = tok.src_model
    # BPE pieces are scored by merge rank (0, -1, -2, ...); unigram scores are log-probs.
    scores = [sp.get_score(i) for i in range(4 + 256, 4 + 256 + 50)]
    assert scores == [float(-k) for k in range(50)]
    assert_round_trip(tok, read_lines(multi30k / "val.en") + UNSEEN, "bpe")


def test_small_corpus_shrinks_vocab(multi30k: Path, tmp_path: Path):
    lines = read_lines(multi30k / "val.en")[:200]
    messages: list[str] = []
    tok = Tokenizer.train(TokenizerConfig(vocab_size=8000), lines, lines, tmp_path / "t",
                          log=messages.append)
    assert 300 < tok.src_vocab_size < 8000
    assert any("supports at most" in m for m in messages), messages
    meta = json.loads((tmp_path / "t" / "tokenizer.json").read_text())
    assert meta["src_vocab_size"] == tok.src_vocab_size and meta["requested_vocab_size"] == 8000
    assert_round_trip(tok, lines, "small corpus")


def test_vocab_too_small_for_alphabet_is_a_config_error(multi30k: Path, tmp_path: Path):
    lines = read_lines(multi30k / "val.en")[:200]
    with pytest.raises(ConfigError, match=r"tokenizer\.vocab_size.*at least \d+"):
        Tokenizer.train(TokenizerConfig(vocab_size=100), lines, lines, tmp_path / "t",
                        log=lambda _: None)
