#!/usr/bin/env bash
# SLURM launcher: one torchrun per node, all GPUs of each node; preemption-safe.
#
#   sbatch --nodes=2 --gres=gpu:8 --ntasks-per-node=1 --cpus-per-task=64 \
#     scripts/slurm_train.sh +experiment=rnl_sthv1 train.batch_size=1
#
# train.batch_size is per process; the recipe's total batch (train.total_batch_size=64) is reached
# by gradient accumulation: here 1 clip x 16 GPUs x 4 passes = 64, at the recipe's lr.
#
# SLURM sends SIGUSR1 to this script 5 minutes before the time limit (--signal below). The
# trap sends SIGTERM to srun, which passes it to torchrun and on to every training process:
# they agree to stop at the next optimiser step, write last.pt and exit (status 75; torchrun
# gives them 30 s before it kills them). The job is then requeued and this script exits with
# status 75; run again, it resumes from last.pt (the same command, the same output_dir). A job
# preempted by SLURM gets SIGTERM directly and is requeued by SLURM itself (--requeue). The run
# directory (output_dir) must be on a filesystem every node sees.
# The rendezvous listens on MASTER_PORT of the first node (default: a port derived from the
# job id, so that jobs sharing a node do not collide).
#SBATCH --job-name=rnlvideo
#SBATCH --ntasks-per-node=1
#SBATCH --output=slurm-%j.out
#SBATCH --signal=B:USR1@300
#SBATCH --requeue
#SBATCH --open-mode=append
set -uo pipefail
cd "${SLURM_SUBMIT_DIR:-$(dirname "$0")/..}"
MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
GPUS_PER_NODE=${GPUS_PER_NODE:-$(python -c "import torch; print(max(1, torch.cuda.device_count()))")}
EXIT_PREEMPTED=75

MASTER_PORT=${MASTER_PORT:-$((20000 + SLURM_JOB_ID % 20000))}

srun --kill-on-bad-exit=1 torchrun \
  --nnodes="$SLURM_JOB_NUM_NODES" \
  --nproc_per_node="$GPUS_PER_NODE" \
  --rdzv_id="$SLURM_JOB_ID" \
  --rdzv_backend=c10d \
  --rdzv_endpoint="$MASTER_ADDR:$MASTER_PORT" \
  tools/train.py "$@" &
srun_pid=$!

stop_requested=0
near_time_limit() {
  echo "[slurm_train] time limit near: asking the run to checkpoint and stop"
  stop_requested=1
  kill -TERM "$srun_pid" 2>/dev/null
}
trap near_time_limit USR1

# wait returns early when the trap runs; bash keeps srun's exit status for the last wait.
while kill -0 "$srun_pid" 2>/dev/null; do
  wait "$srun_pid"
done
wait "$srun_pid"
status=$?
# torchrun reports workers it stopped as a failure (status 1), so the trap's flag counts too.
if [ "$status" -ne 0 ] && { [ "$stop_requested" -eq 1 ] || [ "$status" -eq "$EXIT_PREEMPTED" ]; }; then
  echo "[slurm_train] checkpoint written: requeueing job $SLURM_JOB_ID"
  scontrol requeue "$SLURM_JOB_ID"
  exit "$EXIT_PREEMPTED"
fi
exit "$status"
