#!/usr/bin/env bash
# Multi-GPU / multi-node training with torchrun. Run once per node.
#
#   NPROC=8 bash scripts/dist_train.sh +experiment=rnl_sthv1 train.batch_size=2
#   NNODES=2 MASTER_ADDR=node0 NPROC=8 bash scripts/dist_train.sh +experiment=rnl_sthv1 train.batch_size=1
#
# train.batch_size is per process. The recipes fix the total batch (train.total_batch_size=64)
# and accumulate gradients over total / (batch_size x processes) passes, so both examples train
# at 64 with the recipe's lr: 2 x 8 GPUs x 4 and 1 x 16 GPUs x 4.
# NPROC: processes (GPUs) on this node (default: all visible GPUs, or 1)
# NNODES > 1: the nodes meet at MASTER_ADDR:MASTER_PORT (c10d rendezvous, hosted by the node
#   named MASTER_ADDR; default port 29500) under the id RDZV_ID (default: rnlvideo); the ranks
#   are given out as the nodes join (NODE_RANK is not needed). One node: a free local port.
# Everything else is passed to tools/train.py as Hydra overrides.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${NPROC:-}" ]; then
  NPROC=$(python -c "import torch; print(max(1, torch.cuda.device_count()))")
fi
if [ "${NNODES:-1}" -eq 1 ]; then
  exec torchrun --standalone --nnodes=1 --nproc_per_node="$NPROC" tools/train.py "$@"
fi
if [ -z "${MASTER_ADDR:-}" ]; then
  echo "dist_train.sh: NNODES=$NNODES needs MASTER_ADDR (the host name of one of the nodes)" >&2
  exit 2
fi
exec torchrun \
  --nnodes="$NNODES" \
  --nproc_per_node="$NPROC" \
  --rdzv_backend=c10d \
  --rdzv_endpoint="$MASTER_ADDR:${MASTER_PORT:-29500}" \
  --rdzv_id="${RDZV_ID:-rnlvideo}" \
  tools/train.py "$@"
