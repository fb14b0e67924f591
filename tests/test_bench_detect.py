"""``python -m bench detect`` end to end on a few real captions: the table, the JSON, the
rejection table, and its one-line usage errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _bench(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bench", "detect", *args], cwd=ROOT,
                          env={**os.environ, "WANDB_MODE": "disabled"}, capture_output=True,
                          text=True, timeout=300)


def test_bench_detect_measures_and_writes_json(multi30k: Path, tmp_path: Path) -> None:
    out = tmp_path / "detect.json"
    proc = _bench("--data", str(multi30k), "--per-lang", "25", "--gettext", "0",
                  "--detectors", "fasttext-lite,service", "--unserved-min", "0.5,1.01",
                  "--unserved-letters", "15",
                  "--json", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "fasttext-lite" in proc.stdout and "unserved texts refused" in proc.stdout
    data = json.loads(out.read_text(encoding="utf-8"))
    assert data["served"] == ["cs", "de", "en", "fr"]
    assert data["counts"]["sentences"] == 100 and data["counts"]["gettext"] == 0
    assert [(r["detector"], r["mode"]) for r in data["results"]] == [
        ("fasttext-lite", "served"), ("fasttext-lite", "all"), ("service", "served"),
        ("service", "all")]
    for result in data["results"]:
        sentences = result["groups"]["sentences"]
        assert sentences["n"] == 100 and sentences["accuracy"] >= 0.95
        assert set(sentences["per_language"]) == {"cs", "de", "en", "fr"}
        assert sentences["us_per_call"] > 0 and result["load_mb"] > 0
        assert 0 < result["groups"]["1 word"]["n"] <= 100
    by_min = {row["unserved_min"]: row["groups"]["sentences"] for row in data["rejection"]}
    assert list(by_min) == [0.5, 1.01]
    assert by_min[0.5]["unserved"] >= 0.9 and by_min[0.5]["served"] >= 0.95
    assert by_min[1.01]["unserved"] <= 0.05  # restricted only: French answered as de or en


def test_bench_detect_usage_errors(multi30k: Path) -> None:
    proc = _bench("--data", str(multi30k), "--detectors", "nosuch")
    assert proc.returncode == 2 and "--detectors: unknown nosuch" in proc.stderr
    proc = _bench("--data", str(multi30k), "--served", "de,xx", "--gettext", "0")
    assert proc.returncode != 0 and "test_2016_flickr.xx" in proc.stderr
