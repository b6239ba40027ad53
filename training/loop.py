"""The training loop of one fold: steps, per-epoch validation Dice, best and last checkpoints, resume, log.

Written once for both families; what differs (network, dataset, loss, how a validation case is
predicted) comes in as arguments. ``last.pt`` holds everything needed to continue (model, optimiser,
scheduler, gradient scaler, epoch, best score); ``best.pt`` the model of the epoch with the highest
validation Dice. ``training_log.csv`` gets one row per epoch and ``curves.png`` is redrawn from it.

With ``average_from`` the learning rate stays constant and, from that epoch on, the weights (batch-norm
statistics included) are averaged after every step, as SWA (Izmailov et al. 2018) and SWAD (Cha et al.
2021, dense averaging for unseen domains) do: an average of nearby solutions lies in a flatter
region of the loss and generalises better to data unlike the training set's. The average is what
is validated and stored as ``model`` in both checkpoints; ``last.pt`` keeps the raw weights beside it
to resume from.
"""

from __future__ import annotations

import csv
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from model.atomic import atomic_path
from model.bf16_check import faulty_bf16_convolutions
from model.windowing import NEIGHBOURS
from training.data import CachedCase
from training.distributed import DistInfo, all_sum, barrier, gather_batch
from training.plots import plot_curves

LOG_FIELDS = ("epoch", "train_loss", "val_dice", "val_cases", "lr", "seconds")


@dataclass(frozen=True)
class LoopConfig:
    epochs: int
    steps_per_epoch: int
    batch_size: int  # global: split evenly over the ranks
    lr: float
    weight_decay: float = 0.0
    optimizer: str = "adamw"  # "adamw" (2D seed) or "adam" (3D seed)
    workers: int = 2
    seed: int = 0
    resume: bool = False
    validate_every: int = 1
    bf16: bool = False  # CPU steps under bf16 autocast (where the CPU has native bf16: AMX / AVX512-BF16)
    init_from: Path | None = None  # warm start: a checkpoint whose model weights a fresh run begins from
    average_from: int = 0  # from this epoch on, average the weights after every step at a constant lr (0: off)


def make_optimizer(params: list[nn.Parameter], config: LoopConfig) -> torch.optim.Optimizer:
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    raise ValueError(f"unknown optimizer {config.optimizer!r}; expected 'adamw' or 'adam'")


def read_log(path: Path, up_to_epoch: int) -> list[dict]:
    """The rows of a fold's ``training_log.csv`` up to an epoch (strings, as written); none without a log."""
    if not path.is_file():
        return []
    with path.open() as handle:
        return [row for row in csv.DictReader(handle) if int(row["epoch"]) <= up_to_epoch]


def _write_log(rows: list[dict], path: Path) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, LOG_FIELDS)
        writer.writeheader()
        writer.writerows(rows)


def _save(state: dict, path: Path) -> None:
    """Write beside the target, then rename: an interrupted save never leaves a broken checkpoint."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def widen_input(earlier: dict[str, torch.Tensor], target: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A one-slice (``windows3``) checkpoint as the start of a ``combined9`` network: a weight with one
    set of input channels per slice of the neighbour span gets the earlier weights on the centre
    slice's set (``combined9`` is slice-major: z−1, z, z+1) and zero on the neighbours', so the warm
    start computes exactly the earlier network and training adds what the slices above and below
    tell. Other tensors pass as they are (``load_state_dict`` then reports any other mismatch)."""
    slices = 2 * NEIGHBOURS + 1
    out = dict(earlier)
    for key, old in earlier.items():
        new = target.get(key)
        if new is None or old.ndim < 2 or new.shape[1] != slices * old.shape[1] \
                or new.shape[:1] + new.shape[2:] != old.shape[:1] + old.shape[2:]:
            continue
        centre = NEIGHBOURS * old.shape[1]
        out[key] = torch.zeros_like(new)
        out[key][:, centre: centre + old.shape[1]] = old
    return out


def _is_2d(model: nn.Module) -> bool:
    """A network of 2D convolutions (channels_last applies: 3× faster steps with bf16 on AMX)."""
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


def _finite_gradients(model: nn.Module) -> bool:
    """Whether every gradient is finite. A CPU step has no gradient scaler to skip a non-finite one, and
    one such step turns every weight into NaN for good. The one cause seen (the tests' 4-filter cascade
    on an AVX512-BF16 EPYC) was a faulty bf16 kernel, which :func:`_checked_bf16` now keeps out; this
    guard stays for any other."""
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    return bool(torch.isfinite(torch.nn.utils.get_total_norm(grads)))


def _checked_bf16(model: nn.Module, dataset, config: LoopConfig, layout: torch.memory_format, info: DistInfo,
                  desc: str) -> LoopConfig:
    """``config``, or it in fp32 where bf16 autocast computes a convolution wrong on this CPU at
    the batch shape training gives it (:mod:`model.bf16_check`), with one line saying which."""
    example = torch.zeros((config.batch_size // info.world_size, *dataset[0]["image"].shape))
    faulty = faulty_bf16_convolutions(model, example.contiguous(memory_format=layout))
    if not faulty:
        return config
    if info.is_main:
        print(f"{desc}: bf16 is wrong on this CPU for {len(faulty)} convolution(s), e.g. {faulty[0]}; "
              "training in fp32", flush=True)
    return replace(config, bf16=False)


def fit(model: nn.Module, dataset, loss_fn: Callable, val_cases: list[CachedCase],
        val_dice: Callable[[nn.Module, CachedCase], float], out_dir: Path, config: LoopConfig,
        info: DistInfo, desc: str = "train") -> dict:
    """Train ``model`` and return ``{"epoch", "best_dice"}``; validation cases are shared out over the ranks.

    ``val_dice(module, case)`` predicts one case with the bare (unwrapped) module in eval mode and
    returns its Dice, NaN for a case without blood (left out of the mean).
    """
    if config.batch_size % info.world_size:
        raise ValueError(f"global batch {config.batch_size} is not divisible by {info.world_size} processes")
    if not 0 <= config.average_from <= config.epochs:
        raise ValueError(f"--average-from {config.average_from} is outside 0..{config.epochs} (the epochs)")
    out_dir.mkdir(parents=True, exist_ok=True)
    last_path, best_path, log_path = out_dir / "last.pt", out_dir / "best.pt", out_dir / "training_log.csv"
    if info.enabled and info.device.type == "cuda":  # batch statistics over the global batch, as one process
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)  # (PyTorch syncs on GPUs only)
    model.to(info.device)
    layout = torch.channels_last if _is_2d(model) else torch.contiguous_format
    model.to(memory_format=layout)
    if config.bf16:
        config = _checked_bf16(model, dataset, config, layout, info, desc)
    optimizer = make_optimizer(list(model.parameters()), config)
    total_steps = config.epochs * config.steps_per_epoch
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps, eta_min=0.0) \
        if not config.average_from else torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)
    averaged = AveragedModel(model, use_buffers=True) if config.average_from else None
    cuda = info.device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=cuda)
    start_epoch, best = 1, -math.inf
    if config.resume and last_path.is_file():
        state = torch.load(last_path, map_location=info.device, weights_only=True)
        model.load_state_dict(state.get("trained", state["model"]))
        if averaged is not None and "average" in state:
            averaged.load_state_dict(state["average"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        start_epoch, best = int(state["epoch"]) + 1, float(state["best_dice"])
    elif config.init_from is not None:  # new optimiser and schedule (a warm restart), earlier weights
        if not config.init_from.is_file():
            raise FileNotFoundError(f"{config.init_from}: no checkpoint to start from")
        earlier = torch.load(config.init_from, map_location=info.device, weights_only=True)["model"]
        model.load_state_dict(widen_input(earlier, model.state_dict()))
    rows = read_log(log_path, start_epoch - 1)

    net = DistributedDataParallel(model, device_ids=[info.device.index] if cuda else None) if info.enabled else model
    sampler = DistributedSampler(dataset, num_replicas=info.world_size, rank=info.rank, shuffle=True,
                                 seed=config.seed, drop_last=True)
    loader = DataLoader(dataset, batch_size=config.batch_size // info.world_size, sampler=sampler,
                        num_workers=config.workers, pin_memory=cuda, drop_last=True)
    for epoch in range(start_epoch, config.epochs + 1):
        started = time.perf_counter()
        dataset.set_epoch(epoch)
        sampler.set_epoch(epoch)
        net.train()
        loss_sum, steps, skipped = 0.0, 0, 0
        bar = tqdm(loader, desc=f"{desc} epoch {epoch}/{config.epochs}", disable=not info.is_main, leave=False)
        for batch in bar:
            image = batch["image"].to(info.device, non_blocking=True).contiguous(memory_format=layout)
            label = batch["label"].to(info.device, non_blocking=True)
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device_type=info.device.type, dtype=torch.float16 if cuda else torch.bfloat16,
                                enabled=cuda or config.bf16):
                loss = loss_fn(gather_batch(net(image), info), gather_batch(label, info))
            scaler.scale(loss).backward()
            if cuda or _finite_gradients(model):  # on CUDA the scaler skips a non-finite step itself
                scaler.step(optimizer)
                scaler.update()
                if averaged is not None and epoch >= config.average_from:
                    averaged.update_parameters(model)
                loss_sum += float(loss.detach())
                steps += 1
            else:
                skipped += 1
            scheduler.step()
            bar.set_postfix(loss=f"{loss_sum / max(steps, 1):.4f}")
        train_loss = all_sum([loss_sum / max(steps, 1)], info)[0] / info.world_size
        dice = math.nan
        count = 0
        result = averaged.module if averaged is not None and averaged.n_averaged > 0 else model
        if epoch % config.validate_every == 0 or epoch == config.epochs:
            result.eval()
            with torch.no_grad():
                scores = [val_dice(result, case) for case in val_cases[info.rank::info.world_size]]
            result.train()
            total, count = all_sum([sum(s for s in scores if not math.isnan(s)),
                                    sum(1 for s in scores if not math.isnan(s))], info)
            dice, count = (total / count if count else math.nan), int(count)
        if info.is_main:
            improved = not best_path.is_file() or dice > best
            best = dice if improved and not math.isnan(dice) else best
            state = {"model": result.state_dict(), "optimizer": optimizer.state_dict(),
                     "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                     "epoch": epoch, "best_dice": best}
            if averaged is not None:
                state |= {"trained": model.state_dict(), "average": averaged.state_dict()}
            _save(state, last_path)
            if improved:
                _save({"model": state["model"], "epoch": epoch, "val_dice": dice}, best_path)
            rows.append({"epoch": epoch, "train_loss": f"{train_loss:.6f}", "val_dice": f"{dice:.6f}",
                         "val_cases": count, "lr": f"{scheduler.get_last_lr()[0]:.3e}",
                         "seconds": f"{time.perf_counter() - started:.1f}"})
            _write_log(rows, log_path)
            plot_curves(rows, out_dir / "curves.png", title=desc)
            checked = f"val Dice {dice:.4f} ({count} case(s) with blood)" if count else "not validated"
            dropped = f", {skipped} step(s) skipped (non-finite gradients)" if skipped else ""
            print(f"{desc} epoch {epoch}/{config.epochs}: loss {train_loss:.4f}, {checked}{dropped}, "
                  f"{time.perf_counter() - started:.0f} s", flush=True)
        barrier(info)
    return {"epoch": config.epochs, "best_dice": best}
