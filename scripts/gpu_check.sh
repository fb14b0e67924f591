#!/usr/bin/env bash
# One prepared check for a lent GPU machine (no network there): the GPU tests, a short bf16
# training run in both decoder modes, a torchrun DDP run over all GPUs (tokens/s per GPU),
# and the two throughput benchmarks.
#
#   scripts/gpu_check.sh            # on the GPU machine
#   scripts/gpu_check.sh --cpu      # dry run here: same steps, tiny sizes, on the CPU
#
# Before a GPU run, here: scripts/gpu_check.sh --stage   (copies the Multi30k and Tatoeba
# files into .gpu/ and downloads the wheels the GPU image lacks into .whl/; both ignored by
# git). The device tool then carries .gpu and .whl along.
# Output: a log and one JSON summary per benchmark under $OUT (default /tmp/gpu_check).
set -uo pipefail
cd "$(dirname "$0")/.."

MODE=cuda
if [ "${1:-}" = "--stage" ]; then
    mkdir -p .gpu/data/multi30k .gpu/data/multidomain-de-en/general
    cp ../shared/data/multi30k/{train,val,test_2016_flickr}.{de,en} .gpu/data/multi30k/
    cp ../shared/data/multidomain-de-en/general/* .gpu/data/multidomain-de-en/general/
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
        -d .whl datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19
    du -sh .gpu .whl
    exit 0
fi
[ "${1:-}" = "--cpu" ] && MODE=cpu

OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT"
LOG="$OUT/gpu_check.log"
export WANDB_MODE=disabled PYTHONUNBUFFERED=1
if [ -d .gpu/data ]; then
    export TRANSLATE_SHARED_DATA=$PWD/.gpu/data BENCH_DATA=$PWD/.gpu/data/multi30k
    DATA=$PWD/.gpu/data/multi30k
else
    DATA=$(cd ../shared/data/multi30k && pwd)
fi
if ! python3 -c "import datasets" 2>/dev/null && [ -d .whl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD

if [ "$MODE" = cuda ]; then
    STEPS=200; TRAIN_STEPS=1500; BIG=12000; LIMIT=0; PREC=bf16
else
    STEPS=3; TRAIN_STEPS=6; BIG=1000; LIMIT=16; PREC=fp32
fi
status=0
step() {  # step NAME CMD...: run, log, remember failures, go on with the next step
    local name=$1; shift
    echo "=== $name: $*" | tee -a "$LOG"
    local t0=$SECONDS
    "$@" 2>&1 | tee -a "$LOG"
    local rc=${PIPESTATUS[0]}
    echo "=== $name: exit $rc in $((SECONDS - t0)) s" | tee -a "$LOG"
    [ "$rc" = 0 ] || status=1
}

step versions python3 -c "import torch, sentencepiece, sacrebleu, datasets; \
print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), \
torch.cuda.get_device_name() if torch.cuda.is_available() else '-', 'datasets', datasets.__version__)"
if [ "$MODE" = cuda ]; then
    step gpu-tests python3 -m pytest -q -m gpu -p no:cacheprovider tests
fi
step bench-train python3 -m bench train --device "$MODE" --precision "$PREC" \
    --steps "$STEPS" --data "$DATA" --run-root /tmp/gc_bench
step bench-train-big python3 -m bench train --device "$MODE" --precision "$PREC" \
    --steps "$STEPS" --data "$DATA" --max-tokens "$BIG" --modes parallel \
    --run-root /tmp/gc_bench_big
step train-parallel python3 -m translate.train --config configs/multi30k.yaml \
    --set "data.train[0].prefix=$DATA/train" --set "data.valid[0].prefix=$DATA/val" \
    --set "data.test[0].prefix=$DATA/test_2016_flickr" --set training.run_dir=/tmp/gc_run \
    --overwrite \
    --set training.device="$MODE" --set training.precision="$PREC" \
    --set model.input_feeding=false --set training.max_steps="$TRAIN_STEPS" \
    --set training.valid_every=500 --set training.max_tokens=4000 \
    --set training.valid_max_sentences=500
# DDP: one process per GPU (2 gloo ranks on the CPU in the dry run), bf16, parallel
# decoder; the rate logged by rank 0 counts every rank's tokens, so per GPU it is / NPROC.
if [ "$MODE" = cuda ]; then
    NPROC=$(python3 -c "import torch; print(max(1, torch.cuda.device_count()))")
else
    NPROC=2
fi
step train-ddp python3 -m torch.distributed.run --standalone --nproc_per_node="$NPROC" \
    -m translate.train --config configs/multi30k.yaml \
    --set "data.train[0].prefix=$DATA/train" --set "data.valid[0].prefix=$DATA/val" \
    --set "data.test[0].prefix=$DATA/test_2016_flickr" --set training.run_dir=/tmp/gc_ddp \
    --overwrite \
    --set training.device="$MODE" --set training.precision="$PREC" \
    --set model.input_feeding=false --set training.max_steps="$TRAIN_STEPS" \
    --set training.valid_every=100000 --set training.max_tokens=4000 \
    --set training.valid_max_sentences=100 --set logging.log_every=10
step ddp-rate python3 -c "import json, statistics, sys
rows = [json.loads(x) for x in open('/tmp/gc_ddp/metrics.jsonl')]
rates = [r['train/tokens_per_s'] for r in rows if 'train/tokens_per_s' in r][1:] or [0.0]
total = statistics.median(rates)
line = json.dumps({'ddp_processes': $NPROC, 'tokens_per_s': round(total),
                   'tokens_per_s_per_process': round(total / $NPROC)})
print(line)
open('$OUT/ddp.json', 'w').write(line + '\\n')"
step bench-infer python3 -m bench infer --model /tmp/gc_run --device "$MODE" \
    --no-quantize --limit "$LIMIT" --batch-sizes 64,256 --cli-runs 1
echo "gpu_check: $([ $status = 0 ] && echo all steps passed || echo SOME STEPS FAILED)" \
    | tee -a "$LOG"
exit $status
