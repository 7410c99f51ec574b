#!/usr/bin/env bash
# Paper Table 16 at CPU size: distillation on loss-kept vs random-kept real data (10% / 30%
# of each class) and on the full data, for CAFE, LinBa and HaBa (issue 18) and KIP, FRePo
# and RFAD (issue 15), MNIST and cifar10_jpeg, IPC 1. Usage:
#   GOLD_DATA_DIR=../shared/data bash bench/table16.sh OUT DATASET [names...]
# DATASET: mnist | cifar10_jpeg. Names: <method>_<kept>, method in cafe linba haba kip
# frepo rfad, kept in loss10 rand10 loss30 rand30 full; plus "base" (random-real IPC 1,
# the CAFE / DC evaluation), "linba_base" (random-real at LinBa's evaluation preset),
# "kernel_base" (random-real through the FRePo config: the kernel runs' evaluation, ZCA
# on cifar10_jpeg) and "probe<lr>" (HaBa stability probe at lr_hallucinator <lr>, e.g.
# probe100). Default: every CAFE / LinBa / HaBa loss/random run (12), then base, then
# their three full runs; the kernel runs only when named, e.g.
#   bash bench/table16.sh OUT cifar10_jpeg kip_loss10 kip_rand10 rfad_loss10 ...
# Loss scores: UTILITY=path/to/utility.npz (default /tmp/bench_runs/utility_mnist or
# utility_c10 /utility.npz, launch/utility.py with configs/utility.py:<dataset>).
# Each run writes OUT/DATASET/<name>/result.json (log: <name>.log); a run finished with
# the same command is skipped; an interrupted one resumes from its checkpoints, and one
# with another evaluation or more iterations continues / re-evaluates. HaBa first trains
# its expert buffer on the same selection (OUT/DATASET/buffer_<kept>).
# The settings are CPU-sized (bench/notes/cafe_linba.md, bench/notes/haba.md, the
# Table-16 block of BENCHMARKS.md); every pair loss/random/full uses identical settings.
# Extra flags for every distillation: EXTRA="--config.x=y" (e.g. shorter runs); NICE=n
# (5) is the niceness of the distillations.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:?output folder}; DATASET=${2:?mnist or cifar10_jpeg}; shift 2
ALL=""
for m in cafe linba haba; do for k in loss10 rand10 loss30 rand30; do ALL="$ALL ${m}_$k"; done; done
ALL="$ALL base cafe_full linba_full haba_full"
NAMES=${*:-$ALL}
case $DATASET in
  mnist) U=${UTILITY:-/tmp/bench_runs/utility_mnist/utility.npz}; MODELS=${MODELS:-3} ;;
  cifar10_jpeg) U=${UTILITY:-/tmp/bench_runs/utility_c10/utility.npz}; MODELS=${MODELS:-3} ;;
  *) echo "unknown dataset $DATASET"; exit 2 ;;
esac
# HaBa learning rates per dataset: MNIST lr_img 100, lr_hallucinator 0.1 (configs/haba.py);
# cifar10_jpeg (ZCA) lr_img 10, lr_hallucinator 0.01, the only pair of the stability probe
# of bench/notes/haba.md that kept the decoded pixels within 3x the real ones for 5
# iterations (the config's 100 / 100 reach 8.5e6 after one).
HLR=${HABA_LR_HALLUCINATOR:-$([ "$DATASET" = mnist ] && echo 0.1 || echo 0.01)}
HLR_IMG=${HABA_LR_IMG:-$([ "$DATASET" = mnist ] && echo 100 || echo 10)}
D="nice -n ${NICE:-5} python launch/distill.py"
EVAL="--config.eval.epochs=${EVAL_EPOCHS:-100} --config.eval.num_models=$MODELS --config.eval.max_test=${MAX_TEST:-2000}"
W32="--config.model.width=32 --config.batch_real=64 --config.eval.augment=none $EVAL"
CAFE="--config=configs/cafe.py:$DATASET $W32 --config.iterations=10 --config.init=real \
  --config.acc_batch_per_class=10 --config.window=5 --config.max_image_steps=10 \
  --config.max_net_epochs=10 --config.log_every=2 --config.checkpoint_every=5"
LINBA="--config=configs/linba.py:$DATASET $W32 --config.iterations=15 --config.unroll_steps=10 \
  --config.minibatch_per_class=10 --config.lr_img=1.0 --config.log_every=5 --config.checkpoint_every=5"
HABA="--config=configs/haba.py:$DATASET --config.model.width=32 $EVAL --config.iterations=20 \
  --config.lr_img=$HLR_IMG --config.lr_hallucinator=$HLR --config.log_every=5 --config.checkpoint_every=5"
# Kernel methods (bench/notes/kernel.md): width 32, the DC evaluation without augmentation,
# 300 (+1) epochs, full test set; 5 networks on MNIST, 3 on cifar10_jpeg (time). FRePo:
# 200 iterations on MNIST, 100 on cifar10_jpeg (LAMB 0.01); RFAD: 200 iterations on MNIST,
# 100 on cifar10_jpeg (CPU time), 4 nets,
# 32 real / class, lr 0.05; KIP: 100 iterations, 10 real / class, Adam 0.05.
KMODELS=${KMODELS:-$([ "$DATASET" = mnist ] && echo 5 || echo 3)}
KEVAL="--config.model.width=32 --config.eval.augment=none --config.eval.epochs=300"
[ "$KMODELS" = 5 ] || KEVAL="$KEVAL --config.eval.num_models=$KMODELS"
FREPO="--config=configs/frepo.py:$DATASET,1,dc $KEVAL --config.batch_real=64 --config.lr_img=0.01 \
  --config.iterations=$([ "$DATASET" = mnist ] && echo 200 || echo 100)"
RFAD="--config=configs/rfad.py:$DATASET $KEVAL --config.batch_real=32 --config.num_models=4 \
  --config.width_multiplier=1 --config.iterations=$([ "$DATASET" = mnist ] && echo 200 || echo 100) --config.lr_img=0.05 --config.log_every=10"
KIP="--config=configs/kip.py:$DATASET,1,dc $KEVAL --config.batch_real=10 --config.iterations=100 \
  --config.lr_img=0.05 --config.log_every=10"
# Expert buffers: 3 epochs each; 2 experts on 10% of the data, 1 on 30% / full (CPU time;
# both runs of a pair use the same buffer settings).
BUFFER="--config=configs/buffer.py:$DATASET --config.model.width=32 --config.epochs=3 \
  --config.experts_per_chunk=1"
experts() { case $1 in *10) echo "${BUFFER_EXPERTS:-2}" ;; *) echo "${BUFFER_EXPERTS:-1}" ;; esac; }
sel() {  # kept -> selection flags
  case $1 in
    loss10) echo "--config.selection.indicator=loss --config.selection.ratio=0.1 --config.selection.utility_path=$U" ;;
    loss30) echo "--config.selection.indicator=loss --config.selection.ratio=0.3 --config.selection.utility_path=$U" ;;
    rand10) echo "--config.selection.indicator=random --config.selection.ratio=0.1" ;;
    rand30) echo "--config.selection.indicator=random --config.selection.ratio=0.3" ;;
    full) echo "" ;;
  esac
}
mkdir -p "$OUT/$DATASET"
# Runs of a pair (loss / random kept) compile the same programs: share XLA executables.
export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-$OUT/jax_cache}
export JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=${JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS:-2}
run() {  # name, command...
  local name=$1; shift
  local dir="$OUT/$DATASET/$name" cmd="$*"
  if [ -f "$dir/result.json" ] && [ "$(cat "$dir.cmd" 2>/dev/null)" = "$cmd" ]; then
    echo "=== $name: done"; return 0; fi  # (a changed command resumes / re-evaluates)
  echo "=== $name $(date +%T) load $(cut -d' ' -f1 /proc/loadavg)"
  local t0=$SECONDS
  "$@" --workdir="$dir" >> "$dir.log" 2>&1 \
    || { echo "FAILED $name"; tail -5 "$dir.log"; return 0; }
  echo "$cmd" > "$dir.cmd"
  echo "    $(tail -1 "$dir.log") [$((SECONDS - t0)) s]"
}
for name in $NAMES; do
  method=${name%%_*}; kept=${name#*_}
  case $name in
    base) run base $D --config=configs/dc.py:$DATASET $W32 --config.iterations=0 --config.init=real ;;
    linba_base) run linba_base $D --config=configs/dc.py:$DATASET $W32 --config.iterations=0 \
      --config.init=real --config.eval.batch_size=640 --config.eval.weight_decay=0.0 \
      --config.eval.momentum_reset=False --config.eval.schedule=constant ;;
    kernel_base) run kernel_base $D $FREPO --config.iterations=0 --config.init=real ;;
    kip_*) run "$name" $D $KIP $(sel "$kept") ${EXTRA:-} ;;
    frepo_*) run "$name" $D $FREPO $(sel "$kept") ${EXTRA:-} ;;
    rfad_*) run "$name" $D $RFAD $(sel "$kept") ${EXTRA:-} ;;
    cafe_*) run "$name" $D $CAFE $(sel "$kept") ${EXTRA:-} ;;
    linba_*) run "$name" $D $LINBA $(sel "$kept") ${EXTRA:-} ;;
    haba_*)
      run "buffer_$kept" nice -n 5 python launch/buffer.py $BUFFER --config.num_experts=$(experts "$kept") \
        $(sel "$kept")
      run "$name" $D $HABA --config.buffer_dir="$OUT/$DATASET/buffer_$kept" $(sel "$kept") ${EXTRA:-} ;;
    probe*)  # HaBa stability probe (bench/notes/haba.md): 5 iterations at lr_hallucinator
      # ${name#probe} (lr_img: HABA_LR_IMG or the default above) on the rand10 buffer; the guard stops the run once a decoded pixel
      # exceeds 3x the largest real one (the log names the iteration and the value).
      run buffer_rand10 nice -n 5 python launch/buffer.py $BUFFER --config.num_experts=$(experts rand10) \
        $(sel rand10)
      run "$name" $D $HABA --config.buffer_dir="$OUT/$DATASET/buffer_rand10" $(sel rand10) \
        --config.lr_hallucinator=${name#probe} --config.iterations=5 --config.log_every=1 \
        --config.max_abs_ratio=3 --config.eval.num_models=1 --config.eval.epochs=1 ${EXTRA:-} ;;
    *) echo "unknown run $name"; exit 2 ;;
  esac
done
echo "=== done $(date +%T)"
