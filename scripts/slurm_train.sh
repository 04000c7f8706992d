#!/usr/bin/env bash
# SLURM launcher: one torchrun per node, all GPUs of each node.
#
#   sbatch --nodes=2 --gres=gpu:8 --ntasks-per-node=1 --cpus-per-task=64 \
#     scripts/slurm_train.sh +experiment=rnl_sthv1 train.batch_size=1
#
# train.batch_size is per process; the recipe's total batch (train.total_batch_size=64) is reached
# by gradient accumulation: here 1 clip x 16 GPUs x 4 passes = 64, at the recipe's lr.
# The run directory (output_dir) must be on a filesystem every node sees; resubmitting the same
# command resumes from its last.pt.
#SBATCH --job-name=rnlvideo
#SBATCH --ntasks-per-node=1
#SBATCH --output=slurm-%j.out
set -euo pipefail
cd "${SLURM_SUBMIT_DIR:-$(dirname "$0")/..}"
MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
GPUS_PER_NODE=${GPUS_PER_NODE:-$(python -c "import torch; print(max(1, torch.cuda.device_count()))")}
srun --kill-on-bad-exit=1 torchrun \
  --nnodes="$SLURM_JOB_NUM_NODES" \
  --nproc_per_node="$GPUS_PER_NODE" \
  --rdzv_id="$SLURM_JOB_ID" \
  --rdzv_backend=c10d \
  --rdzv_endpoint="$MASTER_ADDR:${MASTER_PORT:-29500}" \
  tools/train.py "$@"
