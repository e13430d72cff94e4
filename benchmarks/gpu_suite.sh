#!/usr/bin/env bash
# The GPU benchmark matrix in one command, printing one markdown table for the README.
#
#   benchmarks/gpu_suite.sh [OUT_DIR]        # on one GPU; the table is also in OUT_DIR/gpu_suite.md
#   PISA_SUITE_TINY=1 benchmarks/gpu_suite.sh   # tiny shapes: a dry run on a CPU
#
# In order of importance, each item a fresh process (its own GPU memory):
#   1. bf16 vs float32 3D convolutions and the whole forward pass (benchmarks/bf16_check.py):
#      some cuDNN 9.10-9.15 releases compute wrong bf16 3D convolutions;
#   2. R18-3D + R18-2D, batch 32, bf16 (the target): the JAX step, and the same with the 3D
#      convolutions channels last (--xla_gpu_force_conv_nhwc: on Hopper XLA lays 3D convolutions
#      out channels first, 2D ones channels last; benchmarks/gpu_compile.py shows it), next to
#      PyTorch eager and torch.compile, each with channels_last_3d (under autocast),
#      cudnn.benchmark on; then float32 next to eager and eager + channels_last_3d;
#   3. JAX's choices at that setting: the input path training takes on a GPU (the split in device
#      memory, each batch gathered, flipped and normalised inside the step) and the conv lowering
#      (stacked, taps: 2D convolutions, channels last without the flag);
#   4. where JAX's step spends its time at that setting: the device kernels per XLA operation,
#      from a jax.profiler trace (benchmarks/profile_step.py; the trace stays in OUT_DIR/trace);
#   5. the eval step at that setting (forward in eval mode: what scores the test split every
#      epoch, and what predict runs), JAX next to PyTorch eager and eager + channels_last_3d;
#   6. R50-3D + R50-2D and C3D + R18-2D at batch 32, then all three at batch 4, bf16 and float32,
#      JAX next to PyTorch eager and eager + channels_last_3d;
#   7. item 2's float32 next to torch.compile (each of its compilations takes a minute or more,
#      so it comes last).
# Paper shapes: 10 clips x 16 x 112 x 112 per sample, 224x224 spectrograms, full width, 10 timed
# steps per variant after a warm-up, one variant at a time (--schedule sequential: at batch 32
# one variant's step needs tens of GiB, so they cannot all be alive at once; "peak memory" is the
# device allocator's). An item that would start after PISA_SUITE_BUDGET_S seconds (default 540)
# is listed as skipped, and one still running PISA_SUITE_GRACE_S seconds (default 30) after it
# is stopped (its finished variants are in the log, "done: ..." lines), so the suite prints its
# table within 10 minutes (budget 0: no limit, the whole matrix). Give a lent machine's command
# a time limit of at least the budget, the grace and a minute more.
# PISA_SUITE_ITEMS (default 1,2,3,4,5,6,7) picks the items to run, e.g. "3,4,5,6,7" to go on
# where a first run's budget ran out: a lent GPU may be a fresh machine with empty caches.
# Compiled JAX programs are cached (JAX_COMPILATION_CACHE_DIR, default
# ~/.cache/pisa_jax/jax_cache): a second run on the same machine compiles less.
# Needs JAX (CUDA), flax, optax, orbax, PyTorch and torchvision; nothing else.
set -u
cd "$(dirname "$0")/.."
REPO=$PWD
OUT=${1:-/tmp/pisa_gpu_suite_$(date +%Y%m%d_%H%M%S)}
mkdir -p "$OUT"
PYTHON=${PYTHON:-python}  # the interpreter with JAX (and PyTorch): $PYTHON, else python on PATH
BUDGET=${PISA_SUITE_BUDGET_S:-540}
GRACE=${PISA_SUITE_GRACE_S:-30}
ITEMS=",$(echo "${PISA_SUITE_ITEMS:-1,2,3,4,5,6,7}" | tr -d " "),"
START=$(date +%s)
ROWS=$OUT/rows.md
CHOICES=$OUT/choices.md
CHECK=$OUT/bf16_check.md
PROFILE=$OUT/profile.md
LOG=$OUT/log.txt
: > "$ROWS"; : > "$CHOICES"; : > "$CHECK"; : > "$PROFILE"; : > "$LOG"; SKIPPED=()
export PYTHONPATH=$REPO${PYTHONPATH:+:$PYTHONPATH}
export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-$HOME/.cache/pisa_jax/jax_cache}
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-3}

if [ "${PISA_SUITE_TINY:-0}" = "1" ]; then
  SHAPES=(--clips 1 --clip_length 16 --image_size 32 --spectrogram_size 32 --base_width 4 --steps 2)
  CHECK_ARGS=(--clips 2 --tiny)
  TORCH_FULL=${PISA_SUITE_TORCH_FULL:-eager,eager+cl3d}   # torch.compile takes minutes on a CPU
  TORCH_LIGHT=${PISA_SUITE_TORCH_LIGHT:-eager}
  TORCH_COMPILE=${PISA_SUITE_TORCH_COMPILE:-}
else
  SHAPES=(--clips 10 --clip_length 16 --image_size 112 --spectrogram_size 224 --base_width 64 --steps 10)
  CHECK_ARGS=(--clips 32)
  TORCH_FULL=${PISA_SUITE_TORCH_FULL:-eager,eager+cl3d,compile,compile+cl3d}  # compiles last
  TORCH_LIGHT=${PISA_SUITE_TORCH_LIGHT:-eager,eager+cl3d}
  TORCH_COMPILE=${PISA_SUITE_TORCH_COMPILE:-compile,compile+cl3d}
fi

wanted() {  # $1: item number, $2: its name; false where not picked, or (recorded) once the
            # budget is spent
  local elapsed=$(( $(date +%s) - START ))
  case "$ITEMS" in *",$1,"*) ;; *) return 1 ;; esac
  if [ "$BUDGET" != "0" ] && [ "$elapsed" -ge "$BUDGET" ]; then
    SKIPPED+=("$1. $2"); return 1
  fi
  echo "[$elapsed s] $1. $2" | tee -a "$LOG"
}

until_limit() {  # seconds left of the budget and its grace (timeout's 0: none without a budget)
  if [ "$BUDGET" = "0" ]; then echo 0; return; fi
  local left=$(( START + BUDGET + GRACE - $(date +%s) ))
  echo $(( left > 1 ? left : 1 ))
}

failed() {  # $1 exit status: why an item has no result
  if [ "$1" = "124" ]; then echo "stopped at the time budget (finished variants: \"done:\" in $LOG)"
  else echo "failed (exit $1), see $LOG"; fi
}

with_precision() {  # torch variant list for a precision: +bf16 after eager/compile in bf16
  if [ "$1" = "bfloat16" ]; then echo "$2" | sed -E 's/(eager|compile)/\1+bf16/g'; else echo "$2"; fi
}

compare() {  # $1 item number, $2 its name, $3 rows file, rest: compare_frameworks flags
  local item=$1 name=$2 rows=$3; shift 3
  wanted "$item" "$name" || return 0
  timeout "$(until_limit)" "$PYTHON" benchmarks/compare_frameworks.py "${SHAPES[@]}" "$@" \
    --schedule sequential --append_rows "$rows" >> "$LOG" 2>&1 \
    || echo "| $name | $(failed $?) | | | | | | |" >> "$rows"
}

# 1. bf16 correctness on this device
if wanted 1 "bf16 check"; then
  timeout "$(until_limit)" "$PYTHON" benchmarks/bf16_check.py "${CHECK_ARGS[@]}" > "$CHECK" \
    2>> "$LOG" || echo "(bf16_check.py: $(failed $?))" >> "$CHECK"
fi

# 2. the target setting, every PyTorch variant in bf16; float32 without torch.compile (item 7)
compare 2 "r18+r18 b32 bfloat16" "$ROWS" --depths 18,18 --batch_size 32 --precision bfloat16 \
  --jax_variants auto:xla_gpu_force_conv_nhwc=true \
  --torch_variants "$(with_precision bfloat16 "$TORCH_FULL")"
compare 2 "r18+r18 b32 float32" "$ROWS" --depths 18,18 --batch_size 32 --precision float32 \
  --torch_variants "$TORCH_LIGHT"

# 3. JAX's own choices at the target setting (no PyTorch: the rows compare with JAX's default).
# The flag is not tried with stacked or taps: their 2D convolutions are channels last already
# (the same program with and without it, benchmarks/gpu_compile.py).
compare 3 "r18+r18 b32 bf16: JAX input path and lowering" "$CHOICES" --depths 18,18 \
  --batch_size 32 --precision bfloat16 --torch_variants none \
  --jax_variants auto:data_on_device,stacked,taps

# 4. the target setting's step, operation by operation
if wanted 4 "r18+r18 b32 bf16: profile"; then
  timeout "$(until_limit)" "$PYTHON" benchmarks/profile_step.py "${SHAPES[@]}" --depths 18,18 \
    --batch_size 32 --precision bfloat16 --top 20 --trace_dir "$OUT/trace" > "$PROFILE" \
    2>> "$LOG" || echo "(profile_step.py: $(failed $?))" >> "$PROFILE"
fi

# 5. evaluation's step (what scores the test split every epoch, and what predict runs)
compare 5 "r18+r18 b32 bf16: eval step" "$ROWS" --depths 18,18 --batch_size 32 --precision bfloat16 \
  --step eval --torch_variants "$(with_precision bfloat16 "$TORCH_LIGHT")"

# 6. the rest of the matrix
for batch in 32 4; do
  for model in "--depths 50,50" "--visual_backbone c3d --depths 18,18" "--depths 18,18"; do
    [ "$batch" = "32" ] && [ "$model" = "--depths 18,18" ] && continue   # item 2
    for precision in bfloat16 float32; do
      # shellcheck disable=SC2086  # $model holds two flags
      compare 6 "$model b$batch $precision" "$ROWS" $model --batch_size $batch --precision $precision \
        --torch_variants "$(with_precision $precision "$TORCH_LIGHT")"
    done
  done
done

# 7. item 2's float32 beside torch.compile
if [ -n "$TORCH_COMPILE" ]; then
  compare 7 "r18+r18 b32 float32: torch.compile" "$ROWS" --depths 18,18 --batch_size 32 \
    --precision float32 --torch_variants "$TORCH_COMPILE"
fi

ELAPSED=$(( $(date +%s) - START ))
DEVICE=$("$PYTHON" -c "import jax; d = jax.devices()[0]; print(f'{d.device_kind} ({d.platform})')" 2>/dev/null)
VERSIONS=$("$PYTHON" -c "import jax, torch; from pisa_jax import cudnn; print(f'jax {jax.__version__} on cuDNN {cudnn.dotted(cudnn.version())}, torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}')" 2>/dev/null)
{
  echo "### GPU suite: $DEVICE, $VERSIONS, $(date -u +%Y-%m-%d), ${ELAPSED} s, items ${ITEMS:1:-1}"
  echo
  echo "Shapes: ${SHAPES[*]}; medians, each variant alone on the GPU; \"its time / JAX's\" > 1: JAX is faster."
  HEADER="| configuration | variant | ms/step | samples/s | s per 516-sample epoch | model FLOP/s | peak memory | its time / JAX's |
|---|---|---|---|---|---|---|---|"
  if [ -s "$ROWS" ]; then
    printf '\n%s\n' "$HEADER"; cat "$ROWS"
  fi
  if [ -s "$CHOICES" ]; then
    printf '\n%s\n\n%s\n' "JAX's input path and conv lowering (R18+R18, batch 32, bf16; time / the default JAX step):" "$HEADER"
    cat "$CHOICES"
  fi
  if [ -s "$CHECK" ]; then
    echo; cat "$CHECK"
  fi
  if [ -s "$PROFILE" ]; then
    printf '\n%s\n\n' "Where the JAX step's time goes (R18+R18, batch 32, bf16):"
    cat "$PROFILE"
  fi
  if [ ${#SKIPPED[@]} -gt 0 ]; then
    echo
    echo "Skipped (time budget of ${BUDGET} s; PISA_SUITE_BUDGET_S=0 runs everything):"
    printf -- "- %s\n" "${SKIPPED[@]}"
  fi
} | tee "$OUT/gpu_suite.md"
echo "(log: $LOG)"
