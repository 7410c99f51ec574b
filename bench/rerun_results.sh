#!/usr/bin/env bash
# Reruns the accuracy results of BENCHMARKS.md (real MNIST / cifar10_jpeg / digits,
# CPU-sized). Usage: GOLD_DATA_DIR=../shared/data bash bench/rerun_results.sh OUT_DIR [names...]
# Each run writes OUT_DIR/<name>/result.json; a finished run is not redone (launchers
# resume or return the stored result).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:?output folder}; shift
ALL="demo dc128_full utility_mnist dc128_loss5 w32_dm buffer_mnist mtt_base mtt w32_dsa c10_base c10_dm c10_dsa w32_base w32_dc prune_off prune_on"
NAMES=${*:-$ALL}
D="python launch/distill.py"
W32="--config.model.width=32 --config.batch_real=64 --config.eval.augment=none --config.eval.epochs=300"
run() {  # name, command...
  local name=$1; shift
  case " $NAMES " in *" $name "*) ;; *) return 0 ;; esac
  echo "=== $name $(date +%T) load $(cut -d' ' -f1 /proc/loadavg)"
  local t0=$SECONDS
  "$@" --workdir="$OUT/$name" > "$OUT/$name.log" 2>&1 || { echo "FAILED $name"; tail -5 "$OUT/$name.log"; return 0; }
  echo "    $(tail -1 "$OUT/$name.log") [$((SECONDS - t0)) s]"
}
run demo $D --config=configs/dm.py:digits --config.selection.indicator=loss --config.selection.ratio=0.5
run dc128_full $D --config=configs/dc.py:mnist --config.batch_real=64 --config.iterations=200 \
  --config.eval.augment=none --config.eval.epochs=300
run utility_mnist python launch/utility.py --config=configs/utility.py:mnist --config.indicator=loss \
  --config.trials=3 --config.epochs=3 --config.model.width=32
run dc128_loss5 $D --config=configs/dc.py:mnist --config.batch_real=64 --config.iterations=200 \
  --config.eval.augment=none --config.eval.epochs=300 --config.selection.indicator=loss \
  --config.selection.ratio=0.05 --config.selection.utility_path="$OUT/utility_mnist/utility.npz"
run w32_dm $D --config=configs/dm.py:mnist $W32 --config.iterations=1000
MTT_DATA="--config.model.width=32 --config.data.train_per_class=1000"
run buffer_mnist python launch/buffer.py --config=configs/buffer.py:mnist $MTT_DATA \
  --config.num_experts=5 --config.epochs=5 --config.experts_per_chunk=1
run mtt_base $D --config=configs/mtt.py:mnist $MTT_DATA --config.buffer_dir="$OUT/buffer_mnist" \
  --config.iterations=0
run mtt $D --config=configs/mtt.py:mnist $MTT_DATA --config.buffer_dir="$OUT/buffer_mnist" \
  --config.iterations=200
run w32_dsa $D --config=configs/dsa.py:mnist $W32 --config.iterations=200
C10="--config.model.width=32 --config.batch_real=64 --config.eval.epochs=300 --config.eval.num_models=3"
run c10_base $D --config=configs/dm.py:cifar10_jpeg $C10 --config.iterations=0 --config.eval.augment=none
run c10_dm $D --config=configs/dm.py:cifar10_jpeg $C10 --config.iterations=1000 --config.eval.augment=none
run c10_dsa $D --config=configs/dsa.py:cifar10_jpeg $C10 --config.iterations=200
run w32_base $D --config=configs/dc.py:mnist $W32 --config.iterations=0 --config.init=real
run w32_dc $D --config=configs/dc.py:mnist $W32 --config.iterations=200
run prune_off $D --config=configs/dc.py:mnist $W32 --config.iterations=50 --config.outer_loop=10
run prune_on $D --config=configs/dc.py:mnist $W32 --config.iterations=50 --config.outer_loop=10 \
  --config.runtime_pruning.enabled=True
echo "=== done $(date +%T)"
