"""``python -m translate.infer`` on the shared tiny de→en run: line accounting, formats,
scoring and one-line errors."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import sacrebleu
import torch

from translate.infer import main, read_lines
from translate.runs.checkpoint import load_checkpoint
from translate.runtime import cpu_bf16_lstm_supported

ROOT = Path(__file__).resolve().parents[1]
ERROR = "python -m translate.infer: error:"


def run(argv: list[str]) -> int:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    return exc.value.code


@pytest.fixture(scope="module")
def german(multi30k: Path) -> list[str]:
    return multi30k.joinpath("test_2016_flickr.de").read_text(encoding="utf-8").splitlines()


@pytest.fixture(scope="module")
def english(multi30k: Path) -> list[str]:
    return multi30k.joinpath("test_2016_flickr.en").read_text(encoding="utf-8").splitlines()


@pytest.fixture(scope="module", autouse=True)
def _threads():
    torch.set_num_threads(2)


def _messy_input(german: list[str]) -> tuple[bytes, int, dict[str, list[int]]]:
    """Real sentences with every kind of awkward line; returns (bytes, lines, line numbers)."""
    long = " ".join(german[100:300])[:3000].encode()
    rows = [
        german[0].encode(),
        b"",
        b"  \t  ",
        long,
        german[1].encode() + b"\r",  # CRLF line
        "Ein Hund \xe4 rennt".encode("latin-1"),  # invalid UTF-8 (latin-1 umlaut)
        german[2].encode() + b"\x0b" + german[3].encode(),  # \v, \f, \x1c, U+2028: not breaks
        german[4].encode() + b"\x0c\x1c" + "\u2028".encode() + german[5].encode(),
        b"\xff\xfe\xfd",
        german[6].encode(),  # last line, no newline
    ]
    numbers = {"empty": [2, 3, 9], "long": [4], "bad_utf8": [6, 9]}
    return b"\n".join(rows), len(rows), numbers


def test_read_lines_splits_on_newline_only():
    lines, bad = read_lines("a\x0bb\x0c\x1c\u2028c\r\n\nd".encode() + b"\xff")
    assert lines == ["a\x0bb\x0c\x1c\u2028c", "", "d\ufffd"] and bad == [3]
    assert read_lines(b"x\n") == (["x"], [])
    assert read_lines(b"") == ([], [])
    assert read_lines(b"\n") == ([""], [])


def test_every_input_line_gets_one_output_line(trained_run, german, tmp_path, capsys):
    data, n, numbers = _messy_input(german)
    src, out = tmp_path / "in.de", tmp_path / "out.en"
    src.write_bytes(data)
    assert run(["--model", str(trained_run), "--input", str(src), "--output", str(out),
                "--beam", "1", "--batch-size", "4", "--workers", "2"]) == 0
    err = capsys.readouterr().err
    lines = out.read_bytes().decode("utf-8").split("\n")
    assert lines[-1] == "" and len(lines) - 1 == n
    for i, line in enumerate(lines[:-1], start=1):
        assert (line == "") == (i in (2, 3)), (i, line)
    assert re.search(r"line 4: input of \d+ pieces exceeds", err)
    assert "invalid UTF-8 replaced on line(s) 6, 9" in err


def test_bf16_precision_reports_its_choice_and_keeps_one_line_per_input(trained_run, german,
                                                                        tmp_path, capsys):
    data, n, _ = _messy_input(german)
    src, out = tmp_path / "in.de", tmp_path / "out.en"
    src.write_bytes(data)
    bf16_runs = cpu_bf16_lstm_supported(torch.cpu.get_capabilities())
    if not bf16_runs:  # AVX2-only: bf16 is one clear line, auto is fp32
        assert run(["--model", str(trained_run), "--input", str(src), "--precision", "bf16",
                    "--device", "cpu"]) == 2
        err = capsys.readouterr().err
        assert err.startswith(ERROR) and err.count("\n") == 1
        assert "cannot run LSTMs in bf16" in err
    for precision in ("bf16", "auto") if bf16_runs else ("auto",):
        assert run(["--model", str(trained_run), "--input", str(src), "--output", str(out),
                    "--beam", "2", "--precision", precision, "--device", "cpu"]) == 0
        err = capsys.readouterr().err
        assert out.read_text(encoding="utf-8").count("\n") == n
        prefix = "translate.infer: precision "
        chosen = [line for line in err.splitlines() if line.startswith(prefix)]
        assert len(chosen) == 1, err
        if precision == "bf16":
            assert chosen[0].startswith(prefix + "bfloat16: bf16 as configured")
    src.write_text(german[0] + "\n", encoding="utf-8")
    assert run(["--model", str(trained_run), "--input", str(src), "--quantize",
                "--precision", "bf16"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(ERROR) and err.count("\n") == 1
    assert "cannot be combined with quantize" in err


def test_stdout_carries_only_translations(trained_run, german, tmp_path):
    data, n, _ = _messy_input(german)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "translate.infer", "--model", str(trained_run), "--beam", "1",
         "--device", "cpu", "--threads", "2"],
        input=data, capture_output=True, env=env, cwd=tmp_path, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr.decode()
    lines = proc.stdout.decode("utf-8").split("\n")
    assert len(lines) - 1 == n and lines[-1] == ""
    assert [i for i, line in enumerate(lines[:-1], 1) if not line] == [2, 3]
    # messages went to stderr, none of them leaked into stdout
    assert b"warning" in proc.stderr and b"warning" not in proc.stdout


def test_jsonl_carries_scores_nbest_and_domains(trained_run, german, tmp_path, capsys):
    src = tmp_path / "in.de"
    src.write_text("\n".join(german[:6] + [""]) + "\n", encoding="utf-8")
    assert run(["--model", str(trained_run), "--input", str(src), "--format", "jsonl",
                "--beam", "3", "--n-best", "2"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == 7
    labels = json.loads((trained_run / "labels.json").read_text())["labels"]
    thresholds = load_checkpoint(trained_run / "best.pt")["thresholds"]  # what auto loads
    assert not (trained_run / "averaged.pt").exists()
    for row in rows[:6]:
        assert row["translation"] == row["nbest"][0]["translation"]
        assert [h["score"] for h in row["nbest"]] == sorted(
            (h["score"] for h in row["nbest"]), reverse=True)
        assert set(row["domain_probs"]) == set(labels)
        for label, th in zip(labels, thresholds, strict=True):
            assert (label in row["domains"]) == (row["domain_probs"][label] >= th)
    assert rows[6] == {"translation": "", "score": None, "scores_over": "shortlist",
                       "nbest": [], "domains": {}, "domain_probs": {}}
    # the test set is all captions: most sentences are tagged so
    assert sum("captions" in r["domains"] for r in rows[:6]) >= 4


def test_jsonl_says_what_the_scores_are_over(trained_run, german, tmp_path, capsys, caplog):
    """The run's shortlist by default, the whole vocabulary with --shortlist off or for a run
    trained without a shortlist (which keeps working, and says so in the log)."""
    src = tmp_path / "in.de"
    src.write_text("\n".join(german[:3]) + "\n", encoding="utf-8")
    old = tmp_path / "old"
    shutil.copytree(trained_run, old)
    (old / "shortlist.pt").unlink()
    cases = [([], trained_run, "shortlist"), (["--shortlist", "on"], trained_run, "shortlist"),
             (["--shortlist", "off"], trained_run, "vocabulary"), ([], old, "vocabulary")]
    for extra, model, over in cases:
        caplog.clear()
        with caplog.at_level("INFO", logger="translate.inference.translator"):
            assert run(["--model", str(model), "--input", str(src), "--format", "jsonl",
                        "--beam", "2", *extra]) == 0
        rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert len(rows) == 3 and {r["scores_over"] for r in rows} == {over}
        assert all(r["score"] < 0 for r in rows)
        assert ("no shortlist.pt" in caplog.text) == (model == old)


def test_reference_scores_match_sacrebleu(trained_run, german, english, tmp_path, capsys):
    src, ref, doms, out = (tmp_path / n for n in ("in.de", "ref.en", "ref.dom", "out.en"))
    src.write_text("\n".join(german[:30]) + "\n", encoding="utf-8")
    ref.write_text("\n".join(english[:30]) + "\n", encoding="utf-8")
    doms.write_text("\n".join("captions" if i < 20 else "captions, general"
                              for i in range(30)) + "\n", encoding="utf-8")
    assert run(["--model", str(trained_run), "--input", str(src), "--output", str(out),
                "--beam", "2", "--reference", str(ref), "--reference-domains",
                str(doms)]) == 0
    err = capsys.readouterr().err
    hyps = out.read_text(encoding="utf-8").splitlines()
    bleu = sacrebleu.corpus_bleu(hyps, [english[:30]])
    chrf = sacrebleu.corpus_chrf(hyps, [english[:30]])
    assert f"BLEU {bleu.score:.2f}  chrF {chrf.score:.2f}  (30 lines)" in err
    assert "BLEU signature: nrefs:1|case:mixed" in err and "chrF signature: nrefs:1" in err
    general = (sacrebleu.corpus_bleu(hyps[20:], [english[20:30]]).score,
               sacrebleu.corpus_chrf(hyps[20:], [english[20:30]]).score)
    assert f"domain general: BLEU {general[0]:.2f}  chrF {general[1]:.2f}  (10 lines)" in err
    assert f"domain captions: BLEU {bleu.score:.2f}" in err


def test_reference_line_count_mismatch(trained_run, german, english, tmp_path, capsys):
    src, ref = tmp_path / "in.de", tmp_path / "ref.en"
    src.write_text("\n".join(german[:5]) + "\n", encoding="utf-8")
    ref.write_text("\n".join(english[:4]) + "\n", encoding="utf-8")
    assert run(["--model", str(trained_run), "--input", str(src), "--reference",
                str(ref)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and captured.err.startswith(ERROR)
    assert f"{ref} has 4 lines" in captured.err and f"{src} has 5" in captured.err


def _broken_runs(trained_run: Path, tmp_path: Path) -> dict[str, tuple[Path, str]]:
    no_tok = tmp_path / "no_tokenizer"
    shutil.copytree(trained_run, no_tok)
    shutil.rmtree(no_tok / "tokenizer")
    corrupt = tmp_path / "corrupt"
    shutil.copytree(trained_run, corrupt)
    data = (corrupt / "best.pt").read_bytes()
    (corrupt / "best.pt").write_bytes(data[: len(data) // 3])
    return {"missing": (tmp_path / "nope", "does not exist"),
            "no_tokenizer": (no_tok, "missing tokenizer/"),
            "corrupt": (corrupt, "corrupt or truncated checkpoint")}


@pytest.mark.parametrize("case", ["missing", "no_tokenizer", "corrupt", "cuda", "option",
                                  "workers"])
def test_user_errors_are_one_line(case, trained_run, german, tmp_path, capsys):
    src = tmp_path / "in.de"
    src.write_text(german[0] + "\n", encoding="utf-8")
    args = ["--input", str(src)]
    if case == "cuda":
        if torch.cuda.is_available():
            pytest.skip("a GPU is present")
        args += ["--model", str(trained_run), "--device", "cuda"]
        expected = "no CUDA GPU is visible"
    elif case == "option":
        args += ["--model", str(trained_run), "--beam", "2", "--n-best", "3"]
        expected = "n_best: expected between 1 and beam_size (2), got 3"
    elif case == "workers":
        args += ["--model", str(trained_run), "--workers", "0"]
        expected = "workers: expected at least 1, got 0"
    else:
        model, expected = _broken_runs(trained_run, tmp_path)[case]
        args += ["--model", str(model)]
    assert run(args) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(ERROR) and captured.err.count("\n") == 1, captured.err
    assert expected in captured.err


@pytest.mark.parametrize("case", ["no_folder", "folder", "input_folder"])
def test_path_problems_are_one_line_before_the_model_loads(case, german, tmp_path, capsys):
    src = tmp_path / "in.de"
    src.write_text(german[0] + "\n", encoding="utf-8")
    args, expected = {
        "no_folder": (["--input", str(src), "--output", str(tmp_path / "nope" / "out.en")],
                      f"--output {tmp_path / 'nope' / 'out.en'}: folder {tmp_path / 'nope'} "
                      "does not exist"),
        "folder": (["--input", str(src), "--output", str(tmp_path)],
                   f"--output {tmp_path}: is a folder; name a file"),
        "input_folder": (["--input", str(tmp_path)], f"--input {tmp_path}: is a folder; name "
                                                    "a file"),
    }[case]
    # a missing model would be the error if the paths were checked after loading it
    assert run(args + ["--model", str(tmp_path / "no_model")]) == 2
    assert capsys.readouterr().err == f"{ERROR} {expected}\n"


def test_output_keeps_modes_and_links_and_names_a_full_disk(trained_run, german, tmp_path,
                                                          capsys):
    src = tmp_path / "in.de"
    src.write_text("\n".join(german[:2]) + "\n", encoding="utf-8")
    common = ["--model", str(trained_run), "--input", str(src), "--beam", "1"]
    new = tmp_path / "new.en"
    assert run(common + ["--output", str(new)]) == 0
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(new.stat().st_mode) == 0o666 & ~umask  # as open() would make it
    real, link = tmp_path / "real.en", tmp_path / "link.en"
    real.write_text("old\n", encoding="utf-8")
    real.chmod(0o640)
    link.symlink_to(real)
    assert run(common + ["--output", str(link)]) == 0
    assert link.is_symlink() and stat.S_IMODE(real.stat().st_mode) == 0o640
    assert real.read_text(encoding="utf-8") == new.read_text(encoding="utf-8")
    fifo, got = tmp_path / "fifo", []
    os.mkfifo(fifo)  # a pipe is written into, not replaced by a regular file
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    assert run(common + ["--output", str(fifo)]) == 0
    reader.join(timeout=60)
    assert stat.S_ISFIFO(fifo.stat().st_mode) and got == [new.read_bytes()]
    capsys.readouterr()
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full on this system")
    assert run(common + ["--output", "/dev/full"]) == 2  # a device: written, not replaced
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"{ERROR} --output /dev/full: could not write (No space left on device)")
    assert stat.S_ISCHR(os.stat("/dev/full").st_mode)


def test_a_closed_pipe_ends_quietly(trained_run, german, tmp_path):
    """``infer | head -1``: the reader goes, infer stops without a traceback, status 141."""
    src = tmp_path / "in.de"
    src.write_text("\n".join(german * 2) + "\n", encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "translate.infer", "--model", str(trained_run), "--input",
         str(src), "--beam", "1", "--batch-size", "8", "--device", "cpu", "--threads", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=tmp_path)
    assert proc.stdout.readline()  # the first chunk's first translation...
    proc.stdout.close()  # ...and the reader is gone while later chunks are being translated
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=300) == 141, err
    assert "Traceback" not in err and "Broken pipe" not in err


def test_default_model_is_latest_run(trained_run, german, tmp_path, monkeypatch, capsys):
    shutil.copytree(trained_run, tmp_path / "runs" / "exp1")
    monkeypatch.chdir(tmp_path)
    src = tmp_path / "in.de"
    src.write_text("\n".join(german[:3]) + "\n", encoding="utf-8")
    assert run(["--input", str(src), "--beam", "1", "--quantize", "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    assert "using the most recent run runs/exp1" in captured.err
    assert len(captured.out.splitlines()) == 3 and all(captured.out.splitlines())


def test_help_and_usage_errors_do_not_load_torch():
    """Start-up: --help and bad arguments answer before torch (or tqdm) is imported."""
    code = (
        "import sys\n"
        "from translate.infer import main\n"
        "for argv in (['--help'], ['--beam', 'x']):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "print(sorted(m for m in ('torch', 'tqdm', 'sentencepiece') if m in sys.modules))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, check=True)
    assert proc.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.parametrize("exported", [None, "0"])
def test_cli_turns_off_mkl_buffer_cache_before_torch_loads(exported, trained_run, german,
                                                          tmp_path):
    """MKL reads MKL_DISABLE_FAST_MM when torch loads it: the command sets it first (its
    effect on peak memory is measured by python -m bench infer) unless the user exported a
    value."""
    src = tmp_path / "in.de"
    src.write_text(german[0] + "\n", encoding="utf-8")
    code = (
        "import os, sys\n"
        "seen = []\n"
        "class Hook:\n"  # records the variable at the moment torch is first imported
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'torch' and not seen:\n"
        "            seen.append(os.environ.get('MKL_DISABLE_FAST_MM'))\n"
        "sys.meta_path.insert(0, Hook())\n"
        "from translate.infer import main\n"
        "try:\n"
        "    main(sys.argv[1:])\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(seen)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "MKL_DISABLE_FAST_MM"}
    if exported is not None:
        env["MKL_DISABLE_FAST_MM"] = exported
    proc = subprocess.run([sys.executable, "-c", code, "--model", str(trained_run), "--input",
                           str(src), "--output", str(tmp_path / "out.en"), "--beam", "1"],
                          env=env, capture_output=True, text=True, cwd=ROOT, check=True)
    assert proc.stdout.strip().splitlines()[-1] == repr([exported or "1"])
    assert (tmp_path / "out.en").read_text(encoding="utf-8").count("\n") == 1
