#!/usr/bin/env bash
# The demo: set up, generate the synthetic dataset if absent, train RNL-TSM-R18 on it, evaluate.
# Extra arguments are Hydra overrides for the training run, e.g. train.epochs=2.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup_env.sh

python tools/make_synthetic.py --root data/synthetic
python tools/train.py +experiment=demo "$@"
python tools/test.py ckpt=outputs/demo/last.pt
python - <<'PY'
import json
m = json.load(open("outputs/demo/metrics.json"))
print(f"demo finished: top-1 {m['top1']:.1f} %  top-5 {m['top5']:.1f} %  "
      f"({m['num_videos']} val videos, {m['views']} view)")
print("run directory: outputs/demo (checkpoints, tb/ TensorBoard logs, metrics.json)")
PY
