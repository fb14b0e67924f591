"""bench/peer_opennmt.py without OpenNMT-py: reading its training reports, choosing
the checkpoint the time budget left whole, and the protocol's configuration."""

from __future__ import annotations

from pathlib import Path

import torch
import yaml

from bench.peer_opennmt import CONFIG, newest_checkpoint, read_train_log

# OpenNMT-py 3.5.1's report line (onmt/utils/statistics.py), filled in.
REPORT = ("[2026-11-29 12:00:{s:02d},000 INFO] Step {step:2d}/1000000; acc: 10.2; ppl: 900.1; "
          "xent: 6.8; lr: 0.00100; sents:    1234; bsz: 1500/1600/20; {src:3.0f}/{tgt:3.0f} "
          "tok/s; {s:6.0f} sec;")


def test_train_log_gives_the_last_step_and_the_mean_rate_after_start_up():
    lines = [REPORT.format(s=i, step=50 * (i + 1), src=900 + i, tgt=t)
             for i, t in enumerate([300, 1200, 1300, 1400])]
    text = "\n".join(["[INFO] Loading vocab", *lines, "[INFO] Validation perplexity: 30.2"])
    assert read_train_log(text) == {"steps": 200, "tgt_tok_s": 1300}
    assert read_train_log("[INFO] Loading vocab\nKilled") is None
    assert read_train_log(REPORT.format(s=1, step=5, src=10, tgt=20)) == {
        "steps": 5, "tgt_tok_s": 20}


def test_the_newest_whole_checkpoint_is_chosen(tmp_path: Path):
    for step in (200, 900, 1000):
        torch.save({"step": step, "w": torch.zeros(1000)}, tmp_path / f"model_step_{step}.pt")
    assert newest_checkpoint(tmp_path).name == "model_step_1000.pt"  # by number, not by name
    cut = tmp_path / "model_step_1000.pt"
    cut.write_bytes(cut.read_bytes()[:-200])  # the budget ended during this save
    assert newest_checkpoint(tmp_path).name == "model_step_900.pt"


def test_the_protocol_config_is_the_recorded_architecture(tmp_path: Path):
    cfg = yaml.safe_load(CONFIG.format(work=tmp_path))
    assert cfg["encoder_type"] == "brnn" and cfg["enc_layers"] == cfg["dec_layers"] == 2
    assert cfg["enc_hid_size"] == 2 * 256 and cfg["dec_hid_size"] == 512  # brnn: 256 per dir
    assert cfg["word_vec_size"] == 256 and cfg["input_feed"] == 1
    assert cfg["global_attention"] == "general" and cfg["dropout"] == [0.3]
    assert cfg["label_smoothing"] == 0.1 and cfg["learning_rate"] == 0.001
    assert (cfg["batch_type"], cfg["batch_size"]) == ("tokens", 2000)
    assert cfg["data"]["corpus_1"]["path_src"] == f"{tmp_path}/train.de"
