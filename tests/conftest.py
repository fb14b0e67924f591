"""Shared fixtures: the real corpora beside the repo, and a quiet, offline environment."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from translate.runtime import cpu_bf16_lstm_supported

ROOT = Path(__file__).resolve().parents[1]
# The corpora live beside the repo; TRANSLATE_SHARED_DATA points elsewhere (e.g. on a GPU
# machine where only a copy of the files travels with the working tree).
SHARED_DATA = Path(os.environ.get("TRANSLATE_SHARED_DATA", ROOT.parent / "shared" / "data"))

# Tests never talk to the network or prompt for a wandb login.
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


# bf16 on the CPU needs oneDNN's bf16 LSTM kernels, which AVX2-only CPUs lack: there bf16 is
# refused with a clear error (tests/test_runtime.py checks that), and its numerics cannot run.
needs_cpu_bf16 = pytest.mark.skipif(
    not cpu_bf16_lstm_supported(torch.cpu.get_capabilities()),
    reason="this CPU cannot run LSTMs in bf16 (oneDNN needs AVX-512 or AMX for them)")


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op thread for a module (``pytestmark = pytest.mark.usefixtures(...)``): the
    test models are tiny, so one thread is fastest, and two OpenMP threads spin-waiting on a
    busy 2-core machine made such modules many times slower. Restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.fail(f"{SHARED_DATA} is missing: the tests read the real corpora beside the repo")
    return SHARED_DATA


@pytest.fixture(scope="session")
def multi30k(shared_data: Path) -> Path:
    return shared_data / "multi30k"


@pytest.fixture(scope="session")
def multidomain(shared_data: Path) -> Path:
    return shared_data / "multidomain-de-en"


def tiny_config(multi30k: Path, multidomain: Path, run_dir: Path, cache_dir: Path,
                **training) -> dict:
    """A small but real de→en setup: Multi30k captions plus Tatoeba 'general' sentences.

    Two labelled sources make the domain head real; the model is tiny so a few hundred
    steps run in well under a minute on 2 cores. Training is pinned to fp32: ``auto`` picks
    bf16 on some CPUs, and no test's verdict may depend on which precision that is (the
    bf16 tests ask for bf16 themselves and say what it must preserve).
    """
    return {
        "data": {
            "src_lang": "de", "tgt_lang": "en", "cache_dir": str(cache_dir),
            "train": [
                {"kind": "text", "prefix": str(multi30k / "train"), "domains": ["captions"],
                 "max_pairs": 6000},
                {"kind": "text", "prefix": str(multidomain / "general" / "train"),
                 "domains": ["general"], "max_pairs": 6000},
            ],
            "valid": [
                {"kind": "text", "prefix": str(multi30k / "val"), "domains": ["captions"],
                 "max_pairs": 150},
                {"kind": "text", "prefix": str(multidomain / "general" / "dev"),
                 "domains": ["general"], "max_pairs": 150},
            ],
            "test": [{"kind": "text", "prefix": str(multi30k / "test_2016_flickr"),
                      "domains": ["captions"], "max_pairs": 200}],
        },
        "tokenizer": {"vocab_size": 1000, "max_tokens": 64},
        "model": {"emb_dim": 64, "enc_hidden": 64, "enc_layers": 1, "dec_hidden": 128,
                  "dec_layers": 1, "dropout": 0.1, "input_feeding": False,
                  "share_embeddings": True, "tagger": {"hidden": 32, "loss_weight": 0.5}},
        "training": {"run_dir": str(run_dir), "device": "cpu", "max_tokens": 1500,
                     "lr": 3e-3, "warmup_steps": 50, "max_steps": 300, "max_epochs": 0,
                     "valid_every": 150, "valid_max_sentences": 300, "num_threads": 1,
                     "seed": 7, "precision": "fp32", **training},
        "inference": {"beam_size": 3, "batch_size": 64},
        "logging": {"wandb": "disabled", "log_every": 50},
    }


@pytest.fixture(scope="session")
def trained_run(multi30k: Path, multidomain: Path, tmp_path_factory) -> Path:
    """One real training run shared by the inference tests (trained once per test run)."""
    from translate import config
    from translate.training.trainer import Trainer

    root = tmp_path_factory.mktemp("trained")
    raw = tiny_config(multi30k, multidomain, root / "run", root / "cache")
    Trainer(config.from_dict(raw)).fit()
    return root / "run"
