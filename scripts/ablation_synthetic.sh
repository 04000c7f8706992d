#!/usr/bin/env bash
# The temporal-reasoning ablation on the synthetic dataset: TSN vs TSM vs TSM+NL vs TSM+RNL, RNL
# region sizes and an X3D-S baseline, 3 seeds each, identical budgets (Hydra multirun), then
# docs/ablation.md.
# Extra arguments are Hydra overrides for every run (e.g. train.epochs=4 for a quick look).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup_env.sh

python tools/make_synthetic.py --root data/synthetic
python tools/train.py --multirun +experiment=ablation_synthetic \
  +variant=tsn,tsm,tsm_nl,tsm_rnl,tsm_rnl_k111,tsm_rnl_k333,tsm_rnl_k377,x3d_s \
  seed=0,1,2 "$@"
python tools/summarize_ablation.py multirun/ablation_synthetic --out docs/ablation.md
