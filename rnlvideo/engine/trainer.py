"""The training loop: DDP, AMP, accumulation, clipping, checkpoints, resume and logging."""

from __future__ import annotations

import json
import logging
import math
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from rnlvideo.config import build_dataset, build_model, load_model_weights
from rnlvideo.data.device_transforms import to_model_input
from rnlvideo.engine import checkpoint as ckpt
from rnlvideo.engine.batching import plan_batches
from rnlvideo.engine.distributed import (
    DistContext,
    all_gather_objects,
    all_reduce_sum,
    barrier,
    broadcast_object,
)
from rnlvideo.engine.evaluation import autocast_context, evaluate_dataset, predict_dataset
from rnlvideo.engine.loaders import make_loader
from rnlvideo.engine.metrics import classification_metrics, topk_correct
from rnlvideo.engine.param_groups import describe_groups, format_groups, write_groups
from rnlvideo.engine.reports import class_names_for, video_names, write_evaluation_report
from rnlvideo.engine.samplers import ResumableDistributedSampler

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
    """Trains ``cfg.model`` on ``cfg.data`` in ``run_dir`` (options: ``train`` in config.yaml)."""

    def __init__(self, cfg: DictConfig, ctx: DistContext, run_dir: str | Path) -> None:
        self.cfg = cfg
        self.tcfg = cfg.train
        self.ctx = ctx
        self.device = ctx.device
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.plan = plan_batches(
            self.tcfg.batch_size,
            ctx.world_size,
            self.tcfg.total_batch_size,
            float(cfg.optim.lr),
            self.tcfg.lr_total_batch_size,
        )
        logger.info("%s", self.plan.describe())
        if ctx.is_main:
            ckpt.remove_stale_temporaries(self.run_dir)
            resolved = OmegaConf.to_yaml(cfg, resolve=True)
            (self.run_dir / "config_resolved.yaml").write_text(resolved)
        seed_everything(cfg.seed + ctx.rank, self.tcfg.deterministic)

        self.train_set = build_dataset(cfg, "train")
        self.val_set = build_dataset(cfg, "val")
        self.train_sampler = ResumableDistributedSampler(
            len(self.train_set), ctx.rank, ctx.world_size, shuffle=True, seed=cfg.seed
        )
        if len(self.train_sampler) < self.tcfg.batch_size:
            raise ValueError(
                f"train.batch_size={self.tcfg.batch_size} exceeds the {len(self.train_sampler)} "
                f"training videos per process: no full batch can be formed"
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
        self.writer = SummaryWriter(self.run_dir / "tb") if ctx.is_main else None
        self._resume_or_finetune()

    # ----------------------------------------------------------------------------- set-up
    def _build_model(self) -> nn.Module:
        model = build_model(self.cfg)
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
        from hydra.utils import instantiate

        optimizer = instantiate(self.cfg.optim, model=self.bare_model, lr=self.plan.lr)
        if self.ctx.is_main:
            groups = describe_groups(optimizer)
            policy = self.cfg.optim.policy
            logger.info("parameter groups (optim.policy=%s):\n%s", policy, format_groups(groups))
            write_groups(self.run_dir / "param_groups.json", groups, policy)
        return optimizer

    def _instantiate_scheduler(self):
        from hydra.utils import instantiate

        return instantiate(
            self.cfg.schedule,
            optimizer=self.optimizer,
            steps_per_epoch=self.steps_per_epoch,
            epochs=self.tcfg.epochs,
        )

    def _resume_or_finetune(self) -> None:
        resume = self.tcfg.resume
        last = self.run_dir / ckpt.LAST
        if resume == "auto":
            path = last if last.is_file() else None
        elif resume in (None, False, "never"):
            path = None
        else:
            path = Path(resume)
        if path is not None:
            self.load_training_state(ckpt.load_checkpoint(path))
            logger.info(
                "resumed from %s at epoch %d, batch %d (step %d)",
                path,
                self.progress.epoch,
                self.progress.batch_in_epoch,
                self.progress.global_step,
            )
        elif self.tcfg.finetune_from:
            load_model_weights(self.bare_model, self.tcfg.finetune_from, reinit_classifier=True)
            logger.info("fine-tuning from the weights of %s", self.tcfg.finetune_from)

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
            "config": OmegaConf.to_yaml(self.cfg, resolve=True),
            "overrides": list(self.cfg.get("overrides", [])),
        }

    def load_training_state(self, state: dict[str, Any]) -> None:
        self.bare_model.load_state_dict(ckpt.model_state_from(state))
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.progress = Progress(**state["progress"])
        rng = state["rng"]
        if state.get("world_size") == self.ctx.world_size and len(rng) > self.ctx.rank:
            ckpt.restore_rng_state(rng[self.ctx.rank])
        else:
            logger.warning("world size changed since the checkpoint: RNG streams are re-seeded")

    def save(self, names: list[str]) -> None:
        """Write the current state under each of ``names`` (rank 0 writes; all ranks wait)."""
        state = self.training_state()
        if self.ctx.is_main:
            first, *others = names
            ckpt.save_atomic(state, self.run_dir / first)
            for name in others:
                ckpt.link_atomic(self.run_dir / first, self.run_dir / name)
            ckpt.prune_epoch_checkpoints(self.run_dir, self.tcfg.keep_last_epochs)
        barrier()

    # ----------------------------------------------------------------------------- training
    def fit(self) -> dict[str, float]:
        """Train the remaining epochs, then evaluate; returns the final metrics."""
        loader_seed = self.cfg.seed * 1000003
        while self.progress.epoch < self.tcfg.epochs:
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
                seed=loader_seed + epoch,
            )
            self.train_one_epoch(loader)
            self.progress.epoch += 1
            self.progress.batch_in_epoch = 0
            names = [ckpt.LAST]
            every = self.tcfg.checkpoint_every_epochs
            if every and self.progress.epoch % every == 0:
                names.append(ckpt.epoch_checkpoint_name(self.progress.epoch))
            last_epoch = self.progress.epoch == self.tcfg.epochs
            if self.tcfg.eval_every_epochs and (
                self.progress.epoch % self.tcfg.eval_every_epochs == 0 or last_epoch
            ):
                top1 = self.validate()
                if top1 > self.progress.best_top1:
                    self.progress.best_top1 = top1
                    names.append(ckpt.BEST)
            self.save(names)
        if self.progress.global_step == 0 and self.tcfg.epochs > 0:
            logger.warning("no optimiser step was taken")
        return self.final_evaluation()

    def train_one_epoch(self, loader: DataLoader) -> None:
        model, tcfg = self.model, self.tcfg
        model.train()
        if tcfg.freeze_bn:
            freeze_batchnorm(model)
        epoch = self.progress.epoch
        batches = len(loader)
        first = self.progress.batch_in_epoch
        total_batches = first + batches
        bar = tqdm(
            total=total_batches,
            initial=first,
            desc=f"epoch {epoch + 1}/{tcfg.epochs}",
            disable=not self.ctx.is_main,
            dynamic_ncols=True,
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
            bar.update(1)
            bar.set_postfix(loss=f"{loss_value:.3f}", lr=f"{self.current_lr():.2e}")
            if is_update and self.progress.global_step % tcfg.log_every_steps == 0:
                self._log_train(window)
                window = dict.fromkeys(window, 0)
            every = tcfg.checkpoint_every_steps
            if is_update and every and self.progress.global_step % every == 0:
                self.save([ckpt.LAST])
            tic = time.perf_counter()
        bar.close()
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
        """Evaluate the final weights on the test split; write ``metrics.json`` and a report.

        The report (per-class accuracy, confusion matrix, per-video predictions) goes to
        ``eval_final_<views>/`` in the run directory.
        """
        dataset = build_dataset(self.cfg, "test")
        preds = predict_dataset(
            self.bare_model,
            dataset,
            self.ctx,
            self.cfg.eval.batch_size,
            self.cfg.eval.num_workers,
            amp=self.tcfg.amp,
            softmax=self.cfg.eval.softmax,
            max_clips=self.cfg.eval.get("max_clips_per_forward"),
        )
        views = self.cfg.data.test_views
        metrics = classification_metrics(preds.scores, preds.labels)
        metrics.update(
            views=views, epoch=self.progress.epoch, checkpoint=str(self.run_dir / ckpt.LAST)
        )
        if self.ctx.is_main:
            write_metrics(self.run_dir / "metrics.json", metrics)
            names = class_names_for(
                self.cfg.data.test.list_file,
                preds.scores.shape[1],
                self.cfg.data.get("category_file"),
            )
            write_evaluation_report(
                self.run_dir / f"eval_final_{views}",
                preds,
                metrics,
                names,
                video_names(dataset),
                tag=f"test_{views}",
                step=self.progress.epoch,
            )
            if self.writer:
                for key in ("top1", "top5", "mean_class_acc"):
                    self.writer.add_scalar(f"test/{key}", metrics[key], self.progress.epoch)
                self.writer.close()
        return metrics


def write_metrics(path: Path, metrics: dict[str, Any]) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(metrics, indent=2) + "\n")
    tmp.replace(path)
