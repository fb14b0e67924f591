"""Process-wide tuning (translate/tuning.py): the commands apply it, importing or loading never
does, and each setting is checked by its effect in a fresh process, not by its variable; and
the precision ``auto`` picks per machine."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from translate.runtime import (
    CPU_AUTO_BF16,
    JOBS,
    RuntimeSetupError,
    choose_precision,
    cpu_bf16_lstm_supported,
    cpu_bf16_unit,
    decoding_job,
    resolve_precision,
)

ROOT = Path(__file__).resolve().parents[1]
TUNING_VARS = ("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "MKL_DISABLE_FAST_MM", "GLIBC_TUNABLES")


def _python(code: str, *args: str, **env: str) -> list[str]:
    """Run ``code`` in a fresh interpreter without any tuning the test process picked up
    (in-process CLI tests apply it) and return the words of its last output line."""
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith("MALLOC_") and k not in TUNING_VARS}
    proc = subprocess.run([sys.executable, "-c", code, *args], env={**clean, **env}, cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.strip().splitlines()[-1].split()


# --------------------------------------------------------------------------- no side effects


def test_importing_translate_or_loading_a_translator_changes_no_environment(trained_run):
    code = (
        "import importlib, os, pkgutil, sys\n"
        "before = dict(os.environ)\n"
        "import translate\n"
        "steps = [dict(os.environ) == before]\n"
        "for m in pkgutil.walk_packages(translate.__path__, 'translate.'):\n"
        "    if not m.name.endswith('__main__'):\n"
        "        importlib.import_module(m.name)\n"
        "steps.append(dict(os.environ) == before)\n"
        "from translate.runtime import seed_everything\n"
        "from translate.inference.translator import Translator\n"
        "seed_everything(3)\n"
        "tr = Translator.load(sys.argv[1], device='cpu', quantize=True)\n"
        "tr.translate(['Ein Hund läuft.'], beam=2)\n"
        "steps.append(dict(os.environ) == before)\n"
        "print(*steps)\n"
    )
    assert _python(code, str(trained_run)) == ["True", "True", "True"]


# --------------------------------------------------------------------------- oneDNN cache

# Runs a bidirectional LSTM over 200 distinct (batch, length) shapes, as length-bucketed
# batches produce, after ``SETUP``; prints the growth of the resident set in MB. oneDNN keeps
# one primitive with its own scratch memory per shape, up to its cache capacity.
_LSTM_SHAPES = """
import torch
torch.set_num_threads(1)
lstm = torch.nn.LSTM(64, 128, batch_first=True, bidirectional=True)

def rss_mb():
    with open('/proc/self/status') as f:
        return next(int(line.split()[1]) for line in f if line.startswith('VmRSS:')) / 1024

with torch.no_grad():
    for i in range(200):
        lstm(torch.randn(8 + i % 16, 5 + i // 16, 64))
        if i == 4:
            base = rss_mb()
print(round(rss_mb() - base, 1))
"""

_CLI_ERRORS = {  # each command stops at a user error, after applying its tuning
    "train": "from translate.train import main\nmain(['--config', 'missing.yaml'])",
    "infer": "from translate.infer import main\nmain(['--input', 'missing.de'])",
    "data": "from translate.data.__main__ import main\nmain(['--config', 'missing.yaml'])",
}


def _lstm_growth_mb(setup: str, **env: str) -> float:
    setup = "\n".join("    " + line for line in setup.splitlines())
    code = f"import contextlib\nwith contextlib.suppress(Exception, SystemExit):\n{setup}\n"
    return float(_python(code + _LSTM_SHAPES, **env)[-1])


needs_proc = pytest.mark.skipif(not Path("/proc/self/status").is_file(),
                                reason="reads the resident set from /proc")


@pytest.mark.host_dependent
@needs_proc
@pytest.mark.parametrize("command", sorted(_CLI_ERRORS))
def test_commands_bound_the_onednn_cache(command):
    """Without the bound, CPU memory grows with every new batch shape (tens of MB here)."""
    assert _lstm_growth_mb(_CLI_ERRORS[command]) < 25


@pytest.mark.host_dependent
@needs_proc
def test_onednn_cache_grows_without_the_bound_or_with_the_users_own_capacity():
    assert _lstm_growth_mb("import translate") > 50
    user = _lstm_growth_mb("from translate import tuning\ntuning.apply_process_tuning()",
                           ONEDNN_PRIMITIVE_CACHE_CAPACITY="1024")
    assert user > 50
    assert _lstm_growth_mb("from translate import tuning\ntuning.apply_process_tuning()") < 25


# --------------------------------------------------------------------------- glibc malloc

# Allocates and frees a 40 MB tensor 20 times (glibc maps anything above 32 MB afresh by
# default, whatever its dynamic threshold) and prints the page faults of each round.
_FAULTS = """
import resource, torch
torch.ones(10)
counts = []
for _ in range(20):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = torch.ones(10_000_000)
    del block
    counts.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(applied, *counts)
"""
_RETAIN = "from translate.tuning import retain_freed_memory\napplied = retain_freed_memory()\n"


def _faults(setup: str, *args: str, **env: str) -> tuple[str, list[int]]:
    out = _python(setup + _FAULTS, *args, **env)
    return out[0], [int(n) for n in out[1:]]


def _fresh_every_round(counts: list[int]) -> bool:
    """A round that maps its block afresh faults 9,766 pages."""
    return sum(n > 5000 for n in counts) >= 18


def _reused(counts: list[int]) -> bool:
    """With the setting glibc still maps afresh a few times while its heap grows (6-7 of 20
    rounds on the development host), then reuses the freed block."""
    return sum(n > 5000 for n in counts) <= 10 and max(counts[-5:]) < 500


needs_glibc = pytest.mark.skipif(
    not (hasattr(os, "confstr") and "glibc" in (os.confstr("CS_GNU_LIBC_VERSION") or "")),
    reason="mallopt is glibc's",
)


@pytest.mark.host_dependent
@needs_glibc
def test_retained_memory_is_reused_without_new_page_faults():
    applied, counts = _faults(_RETAIN)
    assert applied == "True"
    assert _reused(counts), counts


@pytest.mark.host_dependent
@needs_glibc
def test_without_the_setting_every_round_faults_its_pages_again():
    applied, counts = _faults(_RETAIN, MALLOC_ARENA_MAX="4")  # an unrelated MALLOC_ variable
    assert applied == "True"  # only the two thresholds count as the user's own choice
    assert _reused(counts), counts
    applied, counts = _faults(_RETAIN, MALLOC_TRIM_THRESHOLD_="131072")
    assert applied == "False"
    assert _fresh_every_round(counts), counts


_INFER = """
import sys
from translate.infer import main
try:
    main(sys.argv[1:])
except SystemExit as done:
    assert done.code == 0, done.code
applied = 'infer'
"""
_LOAD = """
import sys
from translate.inference.translator import Translator
Translator.load(sys.argv[1], device='cpu', quantize=True).translate(['Ein Hund läuft.'])
applied = 'load'
"""


@pytest.mark.host_dependent
@needs_glibc
def test_infer_quantize_retains_freed_memory_but_loading_alone_does_not(trained_run, multi30k,
                                                                        tmp_path):
    """``infer --quantize`` applies the setting (after loading);
    ``Translator.load(quantize=True)`` on its own does not."""
    src = tmp_path / "in.de"
    src.write_text("".join((multi30k / "val.de").open(encoding="utf-8").readlines()[:3]),
                   encoding="utf-8")
    args = ["--model", str(trained_run), "--input", str(src), "--output",
            str(tmp_path / "out.en"), "--beam", "2", "--device", "cpu", "--quantize"]
    _, counts = _faults(_INFER, *args)
    assert _reused(counts), counts
    _, counts = _faults(_LOAD, str(trained_run))
    assert _fresh_every_round(counts), counts


# --------------------------------------------------------------------------- precision

AVX512_CORE = {"avx512_f": True, "avx512_bw": True, "avx512_vl": True, "avx512_dq": True}
AMX_CPU = {"avx2": True, **AVX512_CORE, "avx512_bf16": True, "amx_tile": True,
           "amx_bf16": True, "cpu_name": "Intel Xeon (Sapphire Rapids)"}
AVX512_BF16_CPU = {"avx2": True, **AVX512_CORE, "avx512_bf16": True, "amx_tile": False,
                   "amx_bf16": False, "cpu_name": "AMD EPYC (Zen 4)"}
AVX512_CPU = {"avx2": True, **AVX512_CORE, "avx512_bf16": False, "amx_tile": False,
              "amx_bf16": False, "cpu_name": "Intel Xeon (Cascade Lake)"}
PLAIN_CPU = {"avx2": True, "avx512_f": False, "avx512_bf16": False, "amx_tile": False,
             "amx_bf16": False, "cpu_name": "an AVX2-only host"}


def test_cpu_bf16_unit_reads_the_amx_and_avx512_bf16_flags():
    assert cpu_bf16_unit(AMX_CPU) == "amx"
    assert cpu_bf16_unit(AVX512_BF16_CPU) == "avx512_bf16"
    assert cpu_bf16_unit(PLAIN_CPU) is None
    assert cpu_bf16_unit({"amx_tile": True}) is None  # tiles without bf16 (int8-only AMX)
    assert cpu_bf16_unit(torch.cpu.get_capabilities()) in ("amx", "avx512_bf16", None)


def test_auto_on_cuda_is_bf16_where_supported_else_fp16():
    assert choose_precision("auto", "cuda", cuda_bf16=True)[0] == torch.bfloat16
    dtype, reason = choose_precision("auto", "cuda", cuda_bf16=False)
    assert dtype == torch.float16 and "GradScaler" in reason
    assert choose_precision("fp32", "cuda", cuda_bf16=True)[0] == torch.float32


def test_auto_on_an_amx_cpu_trains_in_fp32_and_uses_bf16_for_beam_search_only():
    """AMX: the bf16-trained default model decoded 4.9 BLEU worse and trained 1.38x slower
    than fp32; greedy decoding was 0.73x fp32 in bf16, beam search 1.31x at equal BLEU."""
    dtype, reason = choose_precision("auto", "cpu", cpu_caps=AMX_CPU)
    assert dtype == torch.float32 and "amx" in reason and "training" in reason
    dtype, reason = choose_precision("auto", "cpu", cpu_caps=AMX_CPU, job="beam")
    assert dtype == torch.bfloat16 and "amx" in reason and "beam search" in reason
    dtype, reason = choose_precision("auto", "cpu", cpu_caps=AMX_CPU, job="greedy")
    assert dtype == torch.float32 and "greedy decoding" in reason
    assert decoding_job(1) == "greedy" and decoding_job(5) == "beam"


@pytest.mark.parametrize("job", JOBS)
def test_auto_on_a_cpu_without_native_bf16_stays_fp32(job):
    for caps in (PLAIN_CPU, AVX512_CPU):
        dtype, reason = choose_precision("auto", "cpu", cpu_caps=caps, job=job)
        assert dtype == torch.float32 and "no native bf16" in reason


@pytest.mark.parametrize("job", JOBS)
def test_auto_with_avx512_bf16_but_no_amx_is_bf16_as_measured(job):
    """bf16 ran faster than fp32 on such a host (AMD EPYC Zen 4) for training, beam search
    and greedy decoding, at the same BLEU (docs/performance.md)."""
    dtype, reason = choose_precision("auto", "cpu", cpu_caps=AVX512_BF16_CPU, job=job)
    assert dtype == torch.bfloat16 and "avx512_bf16" in reason


def test_auto_table_names_every_unit_and_only_known_jobs():
    assert set(CPU_AUTO_BF16) == {"amx", "avx512_bf16", None}
    assert all(jobs <= set(JOBS) for jobs in CPU_AUTO_BF16.values())
    with pytest.raises(ValueError, match="job 'decode'"):
        choose_precision("auto", "cpu", cpu_caps=AMX_CPU, job="decode")


@pytest.mark.parametrize("caps", [AMX_CPU, AVX512_BF16_CPU, AVX512_CPU])
def test_fp32_and_bf16_can_be_forced_on_any_avx512_cpu_and_fp16_is_refused(caps):
    assert choose_precision("fp32", "cpu", cpu_caps=caps)[0] == torch.float32
    dtype, reason = choose_precision("bf16", "cpu", cpu_caps=caps)
    assert dtype == torch.bfloat16
    assert ("emulated" in reason) == (caps is AVX512_CPU)
    with pytest.raises(RuntimeSetupError, match="'fp16' needs a CUDA device"):
        choose_precision("fp16", "cpu", cpu_caps=caps)
    assert choose_precision("fp32", "cpu", cpu_caps=PLAIN_CPU)[0] == torch.float32


def test_resolve_precision_logs_the_choice_and_why_for_this_machine(caplog):
    with caplog.at_level(logging.INFO, logger="translate.runtime"):
        dtype = resolve_precision("auto", torch.device("cpu"))
    expected = choose_precision("auto", "cpu", cpu_caps=torch.cpu.get_capabilities())
    assert dtype == expected[0]
    assert caplog.messages == [f"precision {str(dtype).removeprefix('torch.')}: {expected[1]}"]


def test_bf16_is_refused_clearly_on_an_avx2_only_cpu():
    assert not cpu_bf16_lstm_supported(PLAIN_CPU)
    with pytest.raises(RuntimeSetupError, match="cannot run LSTMs in bf16.*use fp32 or auto"):
        choose_precision("bf16", "cpu", cpu_caps=PLAIN_CPU)
    assert choose_precision("auto", "cpu", cpu_caps=PLAIN_CPU)[0] == torch.float32


_UNIFORM_BF16_LSTM = """
import torch
from torch.nn.utils.rnn import pack_padded_sequence
lstm = torch.nn.LSTM(16, 16, batch_first=True, bidirectional=True)
packed = pack_padded_sequence(torch.randn(3, 5, 16), torch.tensor([5, 5, 5]), batch_first=True)
try:
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        lstm(packed)
    print("runs")
except RuntimeError:
    print("fails")
"""


def test_the_flag_rule_tells_the_truth_about_a_uniform_length_batch_on_this_cpu():
    """A packed batch whose sentences all have one length takes oneDNN's LSTM path, the one
    AVX2-only CPUs cannot run in bf16 (length-bucketed batches are often uniform, a single
    sentence always is). In a fresh process (a failed oneDNN call would change this one's later
    fp32 results), that batch runs exactly where the flag rule says it does."""
    assert _python(_UNIFORM_BF16_LSTM) == [
        "runs" if cpu_bf16_lstm_supported(torch.cpu.get_capabilities()) else "fails"]
