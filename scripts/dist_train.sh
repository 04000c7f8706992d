#!/usr/bin/env bash
# Multi-GPU / multi-node training with torchrun. Run once per node.
#
#   NPROC=8 bash scripts/dist_train.sh +experiment=rnl_sthv1 train.batch_size=2
#   NNODES=2 NODE_RANK=0 MASTER_ADDR=node0 NPROC=8 bash scripts/dist_train.sh +experiment=rnl_sthv1 train.batch_size=1
#
# train.batch_size is per process. The recipes fix the total batch (train.total_batch_size=64)
# and accumulate gradients over total / (batch_size x processes) passes, so both examples train
# at 64 with the recipe's lr: 2 x 8 GPUs x 4 and 1 x 16 GPUs x 4.
# NPROC: processes (GPUs) on this node (default: all visible GPUs, or 1)
# NNODES, NODE_RANK, MASTER_ADDR, MASTER_PORT: the multi-node rendezvous (defaults: one node)
# Everything else is passed to tools/train.py as Hydra overrides.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${NPROC:-}" ]; then
  NPROC=$(python -c "import torch; print(max(1, torch.cuda.device_count()))")
fi
exec torchrun \
  --nnodes="${NNODES:-1}" \
  --node_rank="${NODE_RANK:-0}" \
  --nproc_per_node="$NPROC" \
  --master_addr="${MASTER_ADDR:-127.0.0.1}" \
  --master_port="${MASTER_PORT:-29500}" \
  tools/train.py "$@"
