"""The training loop: DDP, AMP, accumulation, clipping, checkpoints, resume and logging."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset
from torch.utils.tensorboard import SummaryWriter

from rnlvideo.checkpoint_format import (
    CheckpointError,
    checkpoint_metadata,
    load_checkpoint,
    stored_progress,
)
from rnlvideo.config import (
    build_dataset,
    build_model,
    check_category_file,
    config_node,
    instantiate,
    portable_config,
)
from rnlvideo.data.checks import check_class_count
from rnlvideo.data.device_transforms import to_model_input
from rnlvideo.data.lists import class_names_for
from rnlvideo.engine import training_state as ckpt
from rnlvideo.engine.batching import plan_batches
from rnlvideo.engine.distributed import (
    DistContext,
    all_gather_objects,
    all_reduce_sum,
    broadcast_object,
    call_on_main,
)
from rnlvideo.engine.evaluation import autocast_context, evaluate_dataset, test_models
from rnlvideo.engine.loaders import make_loader
from rnlvideo.engine.metrics import topk_correct
from rnlvideo.engine.param_groups import describe_groups, format_groups, write_groups
from rnlvideo.engine.preemption import Preempted, StopSignals
from rnlvideo.engine.progress import EpochProgress
from rnlvideo.engine.protocols import TestProtocol
from rnlvideo.engine.reports import write_json
from rnlvideo.engine.resume import (
    Claim,
    ResumeRefusedError,
    accept_run_dir,
    check_batch_layout,
    check_config_unchanged,
    claim_run_dir,
)
from rnlvideo.engine.run_log import PendingLog
from rnlvideo.engine.samplers import ResumableDistributedSampler
from rnlvideo.engine.trained_model import TrainedModel
from rnlvideo.files import copy_atomic, save_atomic
from rnlvideo.models.weights import state_dict_in

logger = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite and ``train.nonfinite`` is ``raise``."""


@dataclass
class Progress:
    """Where training stands; saved in every checkpoint."""

    epoch: int = 0  # epoch in progress (0-based)
    batch_in_epoch: int = 0  # loader batches of ``epoch`` already trained on (this rank)
    global_step: int = 0  # optimiser steps taken
    best_top1: float = -1.0
    skipped_steps: int = 0
    pending_validation: bool = False  # saved after an epoch, before its validation ran
    epoch_files: list[str] = field(default_factory=list)  # epoch_XXXX.pt this run wrote


def freeze_batchnorm(model: nn.Module) -> None:
    """Keep every BatchNorm in eval mode with fixed affine parameters."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()
            for param in module.parameters():
                param.requires_grad_(False)


def to_channels_last(model: nn.Module) -> None:
    """Put every 2D convolution's weight in channels-last layout (3D blocks keep theirs)."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            module.to(memory_format=torch.channels_last)


def seed_everything(seed: int, deterministic: bool) -> None:
    """Seed python / numpy / torch; optionally force deterministic kernels."""
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    else:
        torch.backends.cudnn.benchmark = True


class Trainer:
    """Trains ``cfg.model`` on ``cfg.data`` in ``run_dir`` (options: ``train`` in config.yaml).

    ``train.resume`` decides what happens to the checkpoints of ``run_dir``: the policy, the lock
    and the checks live in :mod:`rnlvideo.engine.resume`.

    Everything that can refuse the launch (the lock, the resume policy, the config and batch
    checks, the datasets, the model) runs before anything is written, so a refused launch
    leaves the run directory unchanged. Once accepted, the run writes its files: the lock's
    holder, ``config_resolved.yaml``, ``run_files`` (``{relative path: text}``, e.g. Hydra's
    ``.hydra/`` records), ``param_groups.json``, ``train.log`` (through ``run_log``) and ``tb/``.
    Stop signals write ``last.pt`` at the next optimiser step and raise :class:`Preempted`.
    ``trust_code`` allows the config's ``_target_`` names outside rnlvideo's builders.
    """

    def __init__(
        self,
        cfg: DictConfig,
        ctx: DistContext,
        run_dir: str | Path,
        trust_code: bool = False,
        run_files: Mapping[str, str] | None = None,
        run_log: PendingLog | None = None,
    ) -> None:
        self.cfg = cfg
        self.tcfg = cfg.train
        self.ctx = ctx
        self.device = ctx.device
        self.run_dir = Path(run_dir)
        self.trust_code = trust_code
        self._claim: Claim | None = None
        self.writer: SummaryWriter | None = None
        self.plan = plan_batches(
            self.tcfg.batch_size,
            ctx.world_size,
            self.tcfg.total_batch_size,
            float(cfg.optim.lr),
            self.tcfg.lr_total_batch_size,
        )
        logger.info("%s", self.plan.describe())
        try:
            resume_from = call_on_main(ctx, self._claim_run_dir)
            seed_everything(cfg.seed + ctx.rank, self.tcfg.deterministic)

            self.train_set = build_dataset(cfg, "train", trust_code)
            self.val_set = build_dataset(cfg, "val", trust_code)
            check_category_file(cfg)
            check_class_count(cfg.data.category_file, cfg.data.num_classes)
            self.class_names = class_names_for(
                cfg.data.val.list_file, cfg.data.num_classes, cfg.data.category_file
            )
            self.train_sampler = ResumableDistributedSampler(
                len(self.train_set), ctx.rank, ctx.world_size, shuffle=True, seed=cfg.seed
            )
            if len(self.train_sampler) < self.tcfg.batch_size:
                raise ValueError(
                    f"train.batch_size={self.tcfg.batch_size} exceeds the "
                    f"{len(self.train_sampler)} training videos per process: no full batch "
                    "can be formed"
                )
            self.model = self._build_model()
            self.optimizer = self._build_optimizer()
            self.accumulate = self.plan.accumulation
            self.steps_per_epoch = math.ceil(
                (len(self.train_sampler) // self.tcfg.batch_size) / self.accumulate
            )
            self.scheduler = self._instantiate_scheduler()
            self.scaler = torch.amp.GradScaler(
                self.device.type, enabled=self.tcfg.amp == "fp16" and self.device.type == "cuda"
            )
            self.criterion = nn.CrossEntropyLoss()
            self.progress = Progress()
            self.signals = StopSignals()
            if resume_from is not None:
                self._resume(Path(resume_from))
            elif self.tcfg.finetune_from:
                ckpt.load_finetune_weights(self.bare_model, self.tcfg.finetune_from)
                logger.info("fine-tuning from the weights of %s", self.tcfg.finetune_from)
            call_on_main(ctx, lambda: self._accept_run_dir(run_files or {}, run_log))
            if ctx.is_main:
                self.writer = SummaryWriter(self.run_dir / "tb")
        except BaseException:
            self.close()  # release the run directory (and undo the lock of a refused launch)
            raise

    # ----------------------------------------------------------------------------- set-up
    def _claim_run_dir(self) -> str | None:
        """Rank 0: lock the run directory and pick the checkpoint to resume (None: a new run);
        writes nothing (:func:`rnlvideo.engine.resume.claim_run_dir`)."""
        self._claim = claim_run_dir(self.run_dir, self.tcfg.resume)
        return self._claim.checkpoint

    def _accept_run_dir(self, run_files: Mapping[str, str], run_log: PendingLog | None) -> None:
        """Rank 0, once nothing refuses the launch: write the run's files."""
        files = {"config_resolved.yaml": OmegaConf.to_yaml(self.cfg, resolve=True), **run_files}
        accept_run_dir(self._claim, self.run_dir, self.tcfg.resume, files, run_log)
        write_groups(
            self.run_dir / "param_groups.json",
            describe_groups(self.optimizer),
            self.cfg.optim.policy,
        )

    def _build_model(self) -> nn.Module:
        model = build_model(self.cfg, trust_code=self.trust_code)
        if self.tcfg.freeze_bn:
            freeze_batchnorm(model)
        if self.tcfg.sync_bn and self.ctx.is_distributed:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        model.to(self.device)
        if self.tcfg.channels_last:
            to_channels_last(model)
        self.bare_model = model
        if self.ctx.is_distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            model = DistributedDataParallel(model, device_ids=ids)
        if self.tcfg.compile:
            model = torch.compile(model)
        return model

    def _build_optimizer(self) -> torch.optim.Optimizer:
        node = config_node(self.cfg, "optim")
        optimizer = instantiate(
            node, "optim", self.trust_code, model=self.bare_model, lr=self.plan.lr
        )
        if self.ctx.is_main:
            groups = describe_groups(optimizer)
            policy = self.cfg.optim.policy
            logger.info("parameter groups (optim.policy=%s):\n%s", policy, format_groups(groups))
        return optimizer

    def _instantiate_scheduler(self):
        return instantiate(
            config_node(self.cfg, "schedule"),
            "schedule",
            self.trust_code,
            optimizer=self.optimizer,
            steps_per_epoch=self.steps_per_epoch,
            epochs=self.tcfg.epochs,
        )

    def batch_layout(self) -> dict[str, int]:
        """How a step's batch is split: per process x processes x accumulation = total."""
        return {
            "batch_size": int(self.tcfg.batch_size),
            "world_size": self.ctx.world_size,
            "accumulate_steps": self.accumulate,
            "total_batch_size": int(self.tcfg.batch_size) * self.ctx.world_size * self.accumulate,
        }

    # ------------------------------------------------------------------------- resuming
    def _resume(self, path: Path) -> None:
        """Continue the checkpoint ``path`` after the checks of :mod:`rnlvideo.engine.resume`."""
        cached = self._claim.state if self._claim is not None else None
        state = cached if cached is not None else load_checkpoint(path)
        if self._claim is not None:
            self._claim.state = None
        forced = self.tcfg.resume != "auto"  # force, or an explicit checkpoint path
        check_config_unchanged(state, path, self.cfg, forced)
        self.load_training_state(state, path)
        restart = check_batch_layout(
            state,
            path,
            self.batch_layout(),
            mid_epoch=self.progress.batch_in_epoch > 0,
            epoch=self.progress.epoch,
            forced=forced,
        )
        if restart:
            self.progress.batch_in_epoch = 0
            self.progress.global_step = self.progress.epoch * self.steps_per_epoch
            self.scheduler.last_epoch = self.progress.global_step - 1
            self.scheduler.step()  # the lr of the epoch's first step
        logger.info(
            "resumed from %s at epoch %d, batch %d (step %d)",
            path,
            self.progress.epoch,
            self.progress.batch_in_epoch,
            self.progress.global_step,
        )

    # ------------------------------------------------------------------------ checkpoints
    def training_state(self) -> dict[str, Any]:
        rng_states = all_gather_objects(ckpt.capture_rng_state())
        return {
            "model": self.bare_model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "progress": asdict(self.progress),
            "rng": rng_states,
            "world_size": self.ctx.world_size,
            "batch_layout": self.batch_layout(),
            **checkpoint_metadata(portable_config(self.cfg), self.class_names),
        }

    def load_training_state(self, state: dict[str, Any], path: str | Path = "checkpoint") -> None:
        """Continue from a training checkpoint's weights, optimiser, schedule, progress and
        RNG streams; raises CheckpointError naming ``path`` when they do not fit this run."""
        progress = Progress(**stored_progress(state, path))
        try:
            self._load_states(state, path)
        except (KeyError, IndexError, TypeError, ValueError, AttributeError, RuntimeError) as err:
            if isinstance(err, ResumeRefusedError):
                raise
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise CheckpointError(
                f"{path}: its training state does not fit this run ({reason})"
            ) from None
        self.progress = progress

    def _load_states(self, state: dict[str, Any], path: str | Path) -> None:
        self.bare_model.load_state_dict(state_dict_in(state, path))
        stored_groups = len(state["optimizer"]["param_groups"])
        if stored_groups != len(self.optimizer.param_groups):
            raise ResumeRefusedError(
                f"the checkpoint's optimiser has {stored_groups} parameter groups, this run's "
                f"(optim.policy={self.cfg.optim.policy}) has {len(self.optimizer.param_groups)}: "
                "its optimiser state cannot be continued. Start a new run, or take the weights "
                "alone with train.finetune_from=PATH."
            )
        self.optimizer.load_state_dict(state["optimizer"])
        schedule = state["scheduler"]
        unknown = set(schedule) - set(self.scheduler.state_dict())
        if unknown:
            raise ValueError(f"unknown scheduler entries {sorted(unknown)}")
        self.scheduler.load_state_dict(schedule)
        self.scaler.load_state_dict(state["scaler"])
        rng = state["rng"]
        if state.get("world_size") == self.ctx.world_size and len(rng) > self.ctx.rank:
            ckpt.restore_rng_state(rng[self.ctx.rank])
        else:
            logger.warning("world size changed since the checkpoint: RNG streams are re-seeded")

    def save(self, names: list[str]) -> None:
        """Write the current state under each of ``names``; rank 0 writes, every rank waits.

        A failed write stops every rank with rank 0's error (no rank is left waiting).
        """
        epoch_files = [n for n in names if ckpt.EPOCH_FILE.fullmatch(n)]
        self.progress.epoch_files = [
            *(n for n in self.progress.epoch_files if n not in epoch_files),
            *epoch_files,
        ]
        state = self.training_state()
        call_on_main(self.ctx, lambda: self._write(state, names))
        keep = self.tcfg.keep_last_epochs
        if keep > 0:
            self.progress.epoch_files = self.progress.epoch_files[-keep:]

    def _write(self, state: dict[str, Any], names: list[str]) -> None:
        first, *others = names
        save_atomic(state, self.run_dir / first)
        for name in others:
            copy_atomic(self.run_dir / first, self.run_dir / name)
        ckpt.prune_epoch_checkpoints(
            self.run_dir, self.progress.epoch_files, self.tcfg.keep_last_epochs
        )

    # ----------------------------------------------------------------------------- training
    def fit(self) -> dict[str, float]:
        """Train the remaining epochs, then evaluate; returns the final metrics.

        Raises :class:`Preempted` after writing ``last.pt`` when a stop signal arrived. The run
        directory is released when this returns or raises.
        """
        try:
            return self._fit()
        finally:
            self.close()

    def close(self) -> None:
        """Release the run directory and close the TensorBoard writer."""
        if self.writer:
            self.writer.close()
        if self._claim is not None:
            self._claim.lock.release()
            self._claim = None

    def _fit(self) -> dict[str, float]:
        with self.signals:
            if self.progress.pending_validation:
                self._validate_and_keep_best()
            while self.progress.epoch < self.tcfg.epochs:
                self._train_epoch()
                self.progress.epoch += 1
                self.progress.batch_in_epoch = 0
                names = [ckpt.LAST]
                every = self.tcfg.checkpoint_every_epochs
                if every and self.progress.epoch % every == 0:
                    names.append(ckpt.epoch_checkpoint_name(self.progress.epoch))
                last_epoch = self.progress.epoch == self.tcfg.epochs
                self.progress.pending_validation = bool(self.tcfg.eval_every_epochs) and (
                    self.progress.epoch % self.tcfg.eval_every_epochs == 0 or last_epoch
                )
                self.save(names)
                if self.progress.pending_validation:
                    self._validate_and_keep_best()
                if self.signals.agreed(self.device):
                    raise Preempted(f"stopped after epoch {self.progress.epoch}")
        if self.progress.global_step == 0 and self.tcfg.epochs > 0:
            logger.warning("no optimiser step was taken")
        return self.final_evaluation()

    def _validate_and_keep_best(self) -> None:
        top1 = self.validate()
        self.progress.pending_validation = False
        if top1 > self.progress.best_top1:
            self.progress.best_top1 = top1
            self.save([ckpt.LAST, ckpt.BEST])

    def _train_epoch(self) -> None:
        epoch = self.progress.epoch
        self.train_sampler.set_epoch(
            epoch, start=self.progress.batch_in_epoch * self.tcfg.batch_size
        )
        if hasattr(self.train_set, "set_epoch"):
            self.train_set.set_epoch(epoch)
        loader = make_loader(
            self.train_set,
            self.train_sampler,
            self.tcfg.batch_size,
            self.tcfg.num_workers,
            drop_last=True,
            seed=self.cfg.seed * 1000003 + epoch,
            timeout=self.tcfg.loader_timeout_s,
        )
        self.train_one_epoch(loader)

    def train_one_epoch(self, loader: DataLoader) -> None:
        model, tcfg = self.model, self.tcfg
        model.train()
        if tcfg.freeze_bn:
            freeze_batchnorm(model)
        first = self.progress.batch_in_epoch
        total_batches = first + len(loader)
        progress = EpochProgress(
            self.progress.epoch,
            tcfg.epochs,
            total_batches,
            initial=first,
            every=tcfg.log_every_steps,
            enabled=self.ctx.is_main,
        )
        window = {"loss": 0.0, "top1": 0, "top5": 0, "n": 0, "data": 0.0, "step": 0.0}
        tic = time.perf_counter()
        for i, (clips, labels) in enumerate(loader, start=first):
            data_time = time.perf_counter() - tic
            clips, labels = to_model_input(
                (clips, labels), self.device, self.train_set.device_transform
            )
            is_update = (i + 1) % self.accumulate == 0 or i + 1 == total_batches
            sync = (
                model.no_sync()
                if isinstance(model, DistributedDataParallel) and not is_update
                else nullcontext()
            )
            with sync:
                with autocast_context(self.device, tcfg.amp):
                    logits = model(clips)
                    loss = self.criterion(logits.float(), labels)
                self.scaler.scale(loss / self.accumulate).backward()
            finite = self._all_finite(loss)
            if is_update:
                self._optimizer_step(finite)
            elif not finite:
                self._handle_nonfinite()
            self.progress.batch_in_epoch = i + 1

            loss_value = loss.item()
            top1, top5 = topk_correct(logits.detach(), labels, (1, 5))
            window["loss"] += loss_value * labels.numel()
            window["top1"] += top1
            window["top5"] += top5
            window["n"] += labels.numel()
            window["data"] += data_time
            window["step"] += time.perf_counter() - tic
            progress.update(
                loss_value, self.current_lr(), labels.numel() * self.ctx.world_size, data_time
            )
            if is_update and self.progress.global_step % tcfg.log_every_steps == 0:
                self._log_train(window)
                window = dict.fromkeys(window, 0)
            if is_update:
                every = tcfg.checkpoint_every_steps
                stop = self.signals.agreed(self.device)
                if stop or (every and self.progress.global_step % every == 0):
                    self.save([ckpt.LAST])
                if stop:
                    progress.close()
                    raise Preempted(
                        f"stopped in epoch {self.progress.epoch + 1} after batch "
                        f"{self.progress.batch_in_epoch} (step {self.progress.global_step})"
                    )
            tic = time.perf_counter()
        progress.close()
        if window["n"]:
            self._log_train(window)

    def _all_finite(self, loss: torch.Tensor) -> bool:
        flag = torch.tensor([0.0 if torch.isfinite(loss) else 1.0], device=self.device)
        return float(all_reduce_sum(flag)) == 0.0

    def _handle_nonfinite(self) -> None:
        if self.tcfg.nonfinite == "skip":
            return
        raise NonFiniteLossError(
            f"non-finite loss at epoch {self.progress.epoch + 1}, step "
            f"{self.progress.global_step}; the last good checkpoint is {self.run_dir / ckpt.LAST}. "
            "Lower optim.lr, check the data, or set train.nonfinite=skip to skip such steps."
        )

    def _optimizer_step(self, finite: bool) -> None:
        self.scaler.unscale_(self.optimizer)
        finite = finite and self._grads_finite_or_scaled()
        if not finite:
            self._handle_nonfinite()
            self.progress.skipped_steps += 1
            logger.warning(
                "skipped a step with a non-finite loss (%d so far)", self.progress.skipped_steps
            )
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.update()
        else:
            if self.tcfg.clip_grad_norm:
                nn.utils.clip_grad_norm_(self.bare_model.parameters(), self.tcfg.clip_grad_norm)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        self.progress.global_step += 1

    def _grads_finite_or_scaled(self) -> bool:
        """fp16 overflow is the scaler's business; otherwise a non-finite gradient is an error."""
        if self.scaler.is_enabled():
            return True
        grads = [p.grad for p in self.bare_model.parameters() if p.grad is not None]
        if not grads:
            return True
        norm = torch.stack([g.detach().float().norm() for g in grads]).norm()
        return self._all_finite(norm)

    def current_lr(self) -> float:
        for group in self.optimizer.param_groups:
            if group.get("lr_mult", 1.0) == 1.0:
                return group["lr"]
        return self.optimizer.param_groups[0]["lr"]

    def _log_train(self, window: dict[str, float]) -> None:
        if not self.writer or not window["n"]:
            return
        step = self.progress.global_step
        n = window["n"]
        self.writer.add_scalar("train/loss", window["loss"] / n, step)
        self.writer.add_scalar("train/top1", 100.0 * window["top1"] / n, step)
        self.writer.add_scalar("train/top5", 100.0 * window["top5"] / n, step)
        self.writer.add_scalar("train/lr", self.current_lr(), step)
        self.writer.add_scalar("time/data_s", window["data"], step)
        self.writer.add_scalar("time/step_s", window["step"], step)
        clips_per_s = n * self.ctx.world_size / max(window["step"], 1e-9)
        self.writer.add_scalar("time/clips_per_s", clips_per_s, step)
        if self.device.type == "cuda":
            self.writer.add_scalar(
                "memory/peak_gib", torch.cuda.max_memory_allocated(self.device) / 2**30, step
            )

    # --------------------------------------------------------------------------- evaluation
    def evaluate(self, dataset: Dataset) -> dict[str, float]:
        return evaluate_dataset(
            self.bare_model,
            dataset,
            self.ctx,
            batch_size=self.cfg.eval.batch_size,
            num_workers=self.cfg.eval.num_workers,
            amp=self.tcfg.amp,
            softmax=self.cfg.eval.softmax,
        )

    def validate(self) -> float:
        metrics = self.evaluate(self.val_set)
        epoch = self.progress.epoch
        logger.info(
            "epoch %d val: top1 %.2f top5 %.2f mean-class %.2f (%d videos)",
            epoch,
            metrics["top1"],
            metrics["top5"],
            metrics["mean_class_acc"],
            metrics["num_videos"],
        )
        if self.writer:
            for key in ("top1", "top5", "mean_class_acc"):
                self.writer.add_scalar(f"val/{key}", metrics[key], epoch)
            self.writer.flush()
        return broadcast_object(metrics["top1"])

    def final_evaluation(self) -> dict[str, Any]:
        """Test the final weights (:func:`rnlvideo.engine.evaluation.test_models`); write
        ``metrics.json`` and the report.

        The test split is ``data.val`` under ``protocol`` (``1x1`` by default). The report
        (per-class accuracy, confusion matrix, per-video predictions) goes to
        ``eval_final_<protocol>/`` in the run directory.
        """
        protocol = TestProtocol.of(self.cfg)
        last = self.run_dir / ckpt.LAST
        trained = TrainedModel(
            last, self.cfg, self.bare_model, self.progress.epoch, self.class_names, self.trust_code
        )
        metrics = test_models(
            [trained],
            protocol,
            self.ctx,
            report_dir=self.run_dir / f"eval_final_{protocol.name}",
            extra={"epoch": self.progress.epoch, "checkpoint": str(last)},
        )
        if self.ctx.is_main:
            write_json(self.run_dir / "metrics.json", metrics)
            if self.writer:
                for key in ("top1", "top5", "mean_class_acc"):
                    self.writer.add_scalar(f"test/{key}", metrics[key], self.progress.epoch)
        return metrics
