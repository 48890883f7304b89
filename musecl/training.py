"""How musecl's models train: one loop, :class:`Trainer`, for every torch model (image encoders
and feature heads, eq. 5-6; the fusion, eq. 8-11; the MLP probe; the view encoders).

* **Data.** Anything with ``len()`` and ``get_batch(indices, generator)`` returning a whole batch
  (a tensor, a tuple or a dict of tensors): no per-item Python work, no ``DataLoader`` workers.
* **Loss.** ``loss_fn(model, batch)`` returns a dict with a scalar ``"loss"`` (minimised) and any
  other scalar parts, which are averaged into the history.
* **Randomness.** One ``torch.Generator`` seeded with ``seed`` shuffles the items and is handed to
  ``get_batch`` for its own draws; dropout uses the global torch RNG. Validation re-seeds its
  generator at every evaluation, so every epoch is scored on the same draws.
* **Checkpoints.** ``<checkpoint_dir>/last.pt`` is replaced atomically and holds only tensors and
  plain containers (``weights_only=True``), RNG states included, so ``resume=True`` ends with
  exactly the weights of an uninterrupted run. One that does not load is moved aside to
  ``last.pt.corrupt-<time>`` with a warning and training starts afresh.
* **Several processes** (``torchrun``, :mod:`musecl.scaling.distributed`): every process draws the
  same item order and trains on its share; losses are summed over processes, so all log the same
  history and stop alike; the first process writes the checkpoint.
"""
from __future__ import annotations

import contextlib
import math
import os
import platform
import random
import time
import warnings
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn
from tqdm import tqdm as text_tqdm

from musecl.config import AMP_MODES
from musecl.io import (
    CONFIG_JSON, WEIGHTS_PT, atomic_save_json, atomic_write, check_choice, read_saved_config,
)


class DeviceUnavailableError(RuntimeError):
    """A device the settings ask for (cuda) is not on this machine."""


def resolve_device(device: str | torch.device | None) -> torch.device:
    """'cpu' (default), 'cuda' (error if absent) or 'auto' (cuda when available)."""
    if device is None or device == "cpu":
        return torch.device("cpu")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DeviceUnavailableError(f"device {str(device)!r} was asked for but torch sees no CUDA GPU; "
                                     "use device='cpu' or device='auto'")
    return device


class OneProcess:
    """What the Trainer, the cache and the image stage ask of the processes that train together,
    answered for one process (torchrun's: :class:`musecl.scaling.distributed.TorchProcesses`)."""

    def rank(self) -> int:
        return 0

    def world_size(self) -> int:
        return 1

    def active(self) -> bool:
        """True when more than one process trains."""
        return self.world_size() > 1

    def is_main(self) -> bool:
        """The process that writes files (checkpoints, cache folders, results)."""
        return self.rank() == 0

    def shard(self, order: torch.Tensor) -> torch.Tensor:
        """This process's share of an epoch's item order."""
        return order

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum over processes, in place (returned for convenience)."""
        return tensor

    def gather(self, obj: Any) -> list:
        """Every process's ``obj``, in rank order."""
        return [obj]

    def barrier(self) -> None:
        """Wait until every process gets here."""

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        """The module that trains (DistributedDataParallel around ``model`` in several processes)."""
        return model


_processes = OneProcess()


def processes() -> OneProcess:
    """The processes this one trains with (one, unless it joined ``torchrun``'s)."""
    return _processes


def use_processes(group: OneProcess) -> None:
    """Train with ``group`` from now on (see :func:`musecl.scaling.distributed.init_from_env`)."""
    global _processes
    _processes = group


@contextlib.contextmanager
def one_torch_thread():
    """Run a small model on one thread: a small MLP on a few hundred rows is all per-operation
    overhead, and a second thread only adds synchronisation (see the benchmark appendix)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(old)


LAST_CHECKPOINT = "last.pt"
TIMING_COLUMNS = ("images_per_s", "train_seconds", "seconds")  # the history's columns that vary run to run
CHECKPOINT_FORMAT = 1
CHECKPOINT_EVERY_S = 30.0  # Trainer's default: seconds between checkpoints (0: every epoch)


class TensorBatches:
    """Tensors with a common first dimension, served as batches by indexing (no per-item work)."""

    def __init__(self, *tensors: torch.Tensor):
        if not tensors:
            raise ValueError("TensorBatches needs at least one tensor")
        n = len(tensors[0])
        for i, t in enumerate(tensors):
            if len(t) != n:
                raise ValueError(f"tensor {i} has {len(t)} rows; tensor 0 has {n}. All need the same number")
        self.tensors = tensors

    def __len__(self) -> int:
        return len(self.tensors[0])

    def get_batch(self, indices: torch.Tensor, generator: torch.Generator | None = None):
        out = tuple(t[indices] for t in self.tensors)
        return out[0] if len(out) == 1 else out


def as_batch_dataset(data):
    """A data set with ``len()`` and ``get_batch`` as is; a tensor or tuple of tensors wrapped."""
    if isinstance(data, torch.Tensor):
        return TensorBatches(data)
    if isinstance(data, (tuple, list)) and data and all(isinstance(t, torch.Tensor) for t in data):
        return TensorBatches(*data)
    if hasattr(data, "get_batch") and hasattr(data, "__len__"):
        return data
    raise TypeError(f"cannot train on a {type(data).__name__}: give a tensor, a tuple of tensors, or an "
                    "object with __len__ and get_batch(indices, generator)")


def split_indices(n: int, val_fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A seeded random split of ``range(n)`` into sorted (train, validation) index arrays; at least
    one item is kept for training, ``val_fraction=0`` gives an empty validation set."""
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1); got {val_fraction}")
    if n < 1:
        raise ValueError(f"cannot split {n} items")
    n_val = min(int(round(val_fraction * n)), n - 1)
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def progress_bar():
    """tqdm's notebook bar when ipywidgets is installed, else the text bar (no warning); looked up
    only when a bar is shown, as a failed import is not cached and the probe trains often."""
    try:
        import ipywidgets  # noqa: F401
        from tqdm.auto import tqdm
    except ImportError:
        from tqdm import tqdm
    return tqdm


def _to_device(batch, device: torch.device):
    """Move a batch; to a GPU through pinned (page-locked) memory, so the copy runs
    asynchronously while the GPU still works on the previous step."""
    if isinstance(batch, torch.Tensor):
        if device.type == "cuda" and batch.device.type == "cpu":
            batch = batch.pin_memory()
        return batch.to(device, non_blocking=True)
    if isinstance(batch, (tuple, list)):
        return type(batch)(_to_device(b, device) for b in batch)
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    return batch


def _count_images(batch) -> int:
    """Rows that went through the model: the first dimension of the (first) tensor."""
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0])
    if isinstance(batch, (tuple, list)) and batch:
        return _count_images(batch[0])
    if isinstance(batch, dict) and batch:
        return _count_images(next(iter(batch.values())))
    return 0


def _per_process(seed: int) -> int:
    """A seed of this process's own (the seed itself in one process or in the first)."""
    return seed + 1_000_003 * processes().rank()


def _sum_over_processes(sums: dict[str, torch.Tensor], items: int, images: int,
                        device: torch.device) -> tuple[dict[str, torch.Tensor], int, int]:
    """Loss sums and counts added up over the processes of a group (unchanged in one process)."""
    if not processes().active():
        return sums, items, images
    keys = sorted(sums)  # the same order on every process
    packed = torch.stack([sums[k].double().reshape(()) for k in keys]
                         + [torch.tensor(float(items), dtype=torch.float64, device=device),
                            torch.tensor(float(images), dtype=torch.float64, device=device)])
    processes().all_reduce_sum(packed)
    return dict(zip(keys, packed[:-2])), int(packed[-2]), int(packed[-1])


def cpu_has_native_bf16() -> bool:
    """True where the CPU has bfloat16 instructions (x86: AVX512-BF16 or AMX); elsewhere bf16
    autocast is emulated and slower than float32 (oneDNN's own check counts such CPUs as capable)."""
    try:
        if platform.machine().lower() in ("x86_64", "amd64", "i386", "i686"):
            return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def cuda_has_native_bf16(device: torch.device) -> bool:
    """bfloat16 units from Ampere (compute capability 8) on; torch's own check also counts GPUs
    that only emulate it."""
    return torch.cuda.get_device_capability(device)[0] >= 8


def amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of an ``amp`` setting on ``device`` (None: full float32)."""
    check_choice("amp", amp, AMP_MODES)
    if amp == "auto":  # what pays on this hardware
        if device.type == "cuda":  # bf16 needs no gradient scaler, whose inf check waits for every step
            return torch.bfloat16 if cuda_has_native_bf16(device) else torch.float16
        return torch.bfloat16 if cpu_has_native_bf16() else None
    if amp == "fp16" and device.type != "cuda":
        raise ValueError("amp='fp16' needs a CUDA GPU (float16 autocast on a CPU is slow and unscaled); "
                         "use amp='bf16' or 'off' on a CPU")
    return {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}[amp]


def _rng_state(data_generator: torch.Generator, cuda: bool) -> dict:
    """Every generator's state as tensors and plain containers (loadable with weights_only=True)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"name": str(name), "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": {"version": int(version), "internal": list(internal), "gauss": gauss},
        "data": data_generator.get_state(),
    }
    if cuda:
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict, data_generator: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    nps = state["numpy"]
    np.random.set_state((nps["name"], nps["keys"].numpy().astype(np.uint32), nps["pos"],
                         nps["has_gauss"], nps["cached_gaussian"]))
    pys = state["python"]
    random.setstate((pys["version"], tuple(pys["internal"]), pys["gauss"]))
    data_generator.set_state(state["data"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _cpu_state(model: nn.Module) -> dict:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def load_state(path: str | Path) -> dict:
    """A checkpoint or state dict, on the CPU; ``weights_only``: no code is unpickled."""
    return torch.load(path, map_location="cpu", weights_only=True)


def save_weights(directory: str | Path, state: dict, config: dict) -> Path:
    """Write a model's folder: ``weights.pt`` (its state dict) and ``config.json``, each atomically."""
    directory = Path(directory)
    with atomic_write(directory / WEIGHTS_PT, "wb") as handle:
        torch.save(state, handle)
    atomic_save_json(directory / CONFIG_JSON, config)
    return directory


def load_weights(directory: str | Path, writer: str) -> tuple[dict, dict]:
    """The config and state dict of a :func:`save_weights` folder; an error names ``writer``."""
    config = read_saved_config(directory, (WEIGHTS_PT, CONFIG_JSON), writer)
    return config, load_state(Path(directory) / WEIGHTS_PT)


def _move_aside(path: Path) -> Path:
    """Rename a damaged checkpoint to ``<name>.corrupt-<time>`` (kept for inspection, never read)."""
    name = f"{path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}"
    aside, n = path.with_name(name), 1
    while aside.exists():
        aside, n = path.with_name(f"{name}-{n}"), n + 1
    os.replace(path, aside)
    return aside


@dataclass
class _State:
    epoch: int = 0
    best_val: float = math.inf
    best_epoch: int = 0
    best_state: dict | None = None
    bad_epochs: int = 0
    stopped_early: bool = False


class Trainer:
    """Mini-batch training with early stopping, atomic checkpoints and exact resume.

    Defaults follow the official MuseCL code: Adam (lr 5e-4, amsgrad) and StepLR(10, 0.7);
    ``optimizer_factory(params)`` replaces Adam, ``lr_gamma=1`` keeps the rate constant.

    ``min_batch``: smaller batches are skipped (2 for InfoNCE: a batch of one has no negative).
    ``val_batch_size`` (default ``batch_size``): a mean-over-items loss can score all at once.
    ``patience``: stop when the validation loss has not improved for that many epochs;
    ``restore_best`` (default: when there is a validation set) loads the best epoch's weights at the
    end. ``fit`` returns the history, one dict per epoch: ``epoch, lr, train_<part>...,
    val_<part>..., seconds, images_per_s``.

    ``amp``: "off", "bf16" (a GPU, or a CPU with bf16 instructions), "fp16" (GPUs, with a gradient
    scaler, checkpointed) or "auto" (bf16 where the hardware has it, else fp16 on a GPU and off on
    a CPU); weights and optimizer stay float32. ``checkpoint_every_s``: checkpoint after an epoch
    once that many seconds have passed since the last write, and after the last epoch (0: every
    epoch), so an interruption loses at most that much time and one epoch.
    """

    def __init__(self, model: nn.Module, loss_fn: Callable[[nn.Module, Any], dict], *,
                 lr: float = 5e-4, optimizer_factory: Callable | None = None,
                 lr_step: int = 10, lr_gamma: float = 0.7,
                 epochs: int = 10, batch_size: int = 32, min_batch: int = 1, val_batch_size: int | None = None,
                 patience: int | None = None, restore_best: bool | None = None,
                 seed: int = 0, device: str | torch.device | None = "cpu",
                 checkpoint_dir: str | Path | None = None, resume: bool = False, progress: bool = True,
                 amp: str = "off", checkpoint_every_s: float = CHECKPOINT_EVERY_S):
        if epochs < 0 or batch_size < 1 or not 1 <= min_batch <= batch_size:
            raise ValueError(f"need epochs >= 0 and 1 <= min_batch <= batch_size; got epochs={epochs}, "
                             f"batch_size={batch_size}, min_batch={min_batch}")
        if patience is not None and patience < 1:
            raise ValueError(f"patience must be >= 1 or None; got {patience}")
        if resume and checkpoint_dir is None:
            raise ValueError("resume=True needs a checkpoint_dir to resume from")
        if checkpoint_every_s < 0:
            raise ValueError(f"checkpoint_every_s must be >= 0 (0: every epoch); got {checkpoint_every_s}")
        self.model, self.loss_fn = model, loss_fn
        self.lr, self.lr_step, self.lr_gamma = float(lr), int(lr_step), float(lr_gamma)
        self.optimizer_factory = optimizer_factory or (
            lambda params: torch.optim.Adam(params, lr=self.lr, amsgrad=True))
        self.epochs, self.batch_size, self.min_batch = int(epochs), int(batch_size), int(min_batch)
        self.val_batch_size = int(val_batch_size or batch_size)
        self.patience, self.restore_best = patience, restore_best
        self.seed = int(seed)
        self.device = resolve_device(device)
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
        self.resume, self.progress = bool(resume), bool(progress)
        self.checkpoint_every_s = float(checkpoint_every_s)
        self.amp_dtype = amp_dtype(amp, self.device)
        self.scaler = torch.amp.GradScaler(self.device.type) if self.amp_dtype == torch.float16 else None
        self.history: list[dict] = []
        self.optimizer = self.scheduler = None

    @property
    def _show_progress(self) -> bool:
        return self.progress and processes().is_main()  # one bar, not one per process

    def _autocast(self):
        if self.amp_dtype is None:  # entering a disabled autocast costs more than a small model's step
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    @property
    def checkpoint_path(self) -> Path | None:
        return self.checkpoint_dir / LAST_CHECKPOINT if self.checkpoint_dir is not None else None

    # -- one epoch ---------------------------------------------------------------------

    def _train_epoch(self, net: nn.Module, data, generator: torch.Generator,
                     batch_generator: torch.Generator, epoch: int, tqdm) -> dict:
        net.train()
        sums: dict[str, torch.Tensor] = {}
        items = images = 0
        order = processes().shard(torch.randperm(len(data), generator=generator))
        batches = [b for b in order.split(self.batch_size) if len(b) >= self.min_batch]
        bar = tqdm(batches, desc=f"epoch {epoch}/{self.epochs}", leave=False, disable=not self._show_progress,
                   unit="batch")
        start = time.perf_counter()
        for step, idx in enumerate(bar):
            batch = _to_device(data.get_batch(idx, batch_generator), self.device)
            with self._autocast():
                parts = self.loss_fn(net, batch)
            loss = parts["loss"]
            self.optimizer.zero_grad(set_to_none=True)
            if self.scaler is not None:  # fp16: scale the loss so small gradients do not underflow
                self.scaler.scale(loss).backward()
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                loss.backward()
                self.optimizer.step()
            k = len(idx)
            for key, value in parts.items():  # summed on the device: no sync per step
                v = value.detach().float() * k
                sums[key] = sums[key] + v if key in sums else v
            items += k
            images += _count_images(batch)
            if self._show_progress and step % 10 == 0:
                bar.set_postfix(loss=f"{float(loss.detach()):.4f}")
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        seconds = time.perf_counter() - start
        bar.close()
        sums, items, images = _sum_over_processes(sums, items, images, self.device)
        row = {f"train_{k}": float(v) / max(items, 1) for k, v in sums.items()}
        if not math.isfinite(row.get("train_loss", 0.0)):
            raise FloatingPointError(f"the training loss became {row['train_loss']} in epoch {epoch}; lower the "
                                     "learning rate or check the inputs. The last checkpoint (if any was "
                                     "written) is intact.")
        row["images_per_s"] = images / seconds if seconds > 0 else float("nan")
        row["train_seconds"] = seconds
        return row

    @torch.no_grad()
    def evaluate(self, data) -> dict:
        """Mean loss parts over ``data`` in fixed order, with a generator seeded afresh (from
        ``self.seed + 1``), so repeated evaluations see the same random draws."""
        data = as_batch_dataset(data)
        was_training = self.model.training
        self.model.eval()
        generator = torch.Generator().manual_seed(_per_process(self.seed + 1))
        sums: dict[str, torch.Tensor] = {}
        items = 0
        mine = torch.arange(len(data))[processes().rank()::processes().world_size()]  # each process scores its share
        for idx in mine.split(self.val_batch_size):
            if len(idx) < self.min_batch:
                continue
            batch = _to_device(data.get_batch(idx, generator), self.device)
            with self._autocast():
                parts = self.loss_fn(self.model, batch)
            for key, value in parts.items():
                v = value.detach().double() * len(idx)
                sums[key] = sums[key] + v if key in sums else v
            items += len(idx)
        self.model.train(was_training)
        sums, items, _ = _sum_over_processes(sums, items, 0, self.device)
        return {k: float(v) / max(items, 1) for k, v in sums.items()}

    # -- checkpoints -------------------------------------------------------------------

    def _fingerprint(self, n_train: int, n_val: int) -> dict:
        """Settings a resumed run must share with the run that wrote the checkpoint."""
        return {"n_train": n_train, "n_val": n_val, "batch_size": self.batch_size, "seed": self.seed,
                "lr": self.lr, "lr_step": self.lr_step, "lr_gamma": self.lr_gamma,
                "amp": str(self.amp_dtype), **({"min_batch": self.min_batch} if self.min_batch > 1 else {}),
                "n_parameters": sum(p.numel() for p in self.model.parameters()),
                **({"processes": processes().world_size()} if processes().world_size() > 1 else {})}

    def _checkpoint_due(self, last_checkpoint: float, epoch: int, state: _State) -> bool:
        """After the last epoch, an early stop, or ``checkpoint_every_s`` since the last write; the
        clock is the first process's, so that every process decides alike."""
        if epoch == self.epochs or state.stopped_early:
            return True
        return processes().gather(time.perf_counter() - last_checkpoint >= self.checkpoint_every_s)[0]

    def _save_checkpoint(self, state: _State, fingerprint: dict, generator: torch.Generator,
                         batch_generator: torch.Generator) -> None:
        per_process = (processes().gather(_rng_state(batch_generator, self.device.type == "cuda"))
                       if processes().active() else None)
        if processes().is_main():
            self._write_checkpoint(state, fingerprint, generator, per_process)
        processes().barrier()  # no process goes on before the checkpoint is complete

    def _write_checkpoint(self, state: _State, fingerprint: dict, generator: torch.Generator,
                          per_process: list | None) -> None:
        payload = {"format": CHECKPOINT_FORMAT, "epoch": state.epoch,
                   "model": _cpu_state(self.model), "optimizer": self.optimizer.state_dict(),
                   "scheduler": self.scheduler.state_dict(), "best_val": state.best_val,
                   "best_epoch": state.best_epoch, "best_state": state.best_state,
                   "bad_epochs": state.bad_epochs, "stopped_early": state.stopped_early,
                   "history": list(self.history), "fingerprint": fingerprint,
                   "rng": _rng_state(generator, self.device.type == "cuda"),
                   "rng_per_process": per_process,
                   "scaler": self.scaler.state_dict() if self.scaler is not None else None}
        with atomic_write(self.checkpoint_path, "wb") as handle:
            torch.save(payload, handle)

    def _read_checkpoint(self) -> dict | None:
        """The checkpoint to resume from, or None when it does not load: every process then starts
        afresh, and the first moves the file aside with a warning naming it."""
        try:
            ckpt = load_state(self.checkpoint_path)
            if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
                raise ValueError(f"not a trainer checkpoint of format {CHECKPOINT_FORMAT}")
            problem = None
        except Exception as exc:  # noqa: BLE001 - truncated or garbage: torch raises several kinds
            ckpt, problem = None, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        if not all(ok for ok in processes().gather(problem is None)):  # one decision for all processes
            if processes().is_main() and self.checkpoint_path.exists():
                aside = _move_aside(self.checkpoint_path)
                why = problem or "it did not load in another process"
                warnings.warn(f"checkpoint {self.checkpoint_path} is corrupt ({why}); moved it to {aside.name} "
                              "and training starts from the beginning", stacklevel=3)
            processes().barrier()
            return None
        return ckpt

    def _load_checkpoint(self, ckpt: dict, fingerprint: dict, generator: torch.Generator,
                         batch_generator: torch.Generator) -> _State:
        saved = dict(ckpt.get("fingerprint", {}))
        if saved.get("drop_last") is False:  # checkpoints before min_batch replaced drop_last
            del saved["drop_last"]
        diff = {k: (saved.get(k), fingerprint.get(k)) for k in sorted({*saved, *fingerprint})
                if saved.get(k) != fingerprint.get(k)}
        if diff:
            text = ", ".join(f"{k}: checkpoint {a!r} vs now {b!r}" for k, (a, b) in diff.items())
            raise ValueError(f"cannot resume from {self.checkpoint_path}: it was written by a different run "
                             f"({text}). Delete it, use another checkpoint_dir, or resume=False.")
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        _set_rng_state(ckpt["rng"], generator)
        if ckpt.get("rng_per_process"):  # this process's own draws (and its global RNGs)
            _set_rng_state(ckpt["rng_per_process"][processes().rank()], batch_generator)
        if self.scaler is not None and ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        self.history = list(ckpt["history"])
        return _State(**{f.name: ckpt[f.name] for f in fields(_State)})  # saved by _write_checkpoint

    # -- the loop ----------------------------------------------------------------------

    def fit(self, train, val=None) -> list[dict]:
        """Train for ``epochs`` epochs (or until early stopping); return the per-epoch history."""
        train = as_batch_dataset(train)
        val = as_batch_dataset(val) if val is not None and len(val) > 0 else None
        if len(train) == 0:
            raise ValueError("the training set is empty")
        if self.patience is not None and val is None:
            raise ValueError(f"patience={self.patience} (early stopping) needs a validation set; give val= "
                             "(e.g. from split_indices) or set patience=None")
        restore_best = (val is not None) if self.restore_best is None else self.restore_best
        self.model.to(self.device)
        net = processes().wrap(self.model, self.device)  # what trains; self.model stays the plain module
        self.optimizer = self.optimizer_factory(self.model.parameters())
        self.scheduler = torch.optim.lr_scheduler.StepLR(self.optimizer, self.lr_step,
                                                         self.lr_gamma)
        generator = torch.Generator().manual_seed(self.seed)  # the item order: the same on every process
        # one process: the same generator draws images and augmentations; several: one per process
        batch_generator = (generator if processes().world_size() == 1
                           else torch.Generator().manual_seed(_per_process(self.seed)))
        fingerprint = self._fingerprint(len(train), 0 if val is None else len(val))

        ckpt = self._read_checkpoint() if self.resume and self.checkpoint_path.exists() else None
        if ckpt is not None:
            state = self._load_checkpoint(ckpt, fingerprint, generator, batch_generator)
        else:
            seed = _per_process(self.seed)  # python, numpy and torch's global generators
            random.seed(seed)
            np.random.seed(seed % 2**32)
            torch.manual_seed(seed)
            state = _State()
            self.history = []

        tqdm = progress_bar() if self._show_progress else text_tqdm
        epochs = tqdm(range(state.epoch + 1, self.epochs + 1), desc="training", disable=not self._show_progress,
                      unit="epoch", initial=state.epoch, total=self.epochs)
        last_checkpoint = time.perf_counter()
        for epoch in epochs:
            if state.stopped_early:
                break
            t0 = time.perf_counter()
            lr = float(self.optimizer.param_groups[0]["lr"])
            row = {"epoch": epoch, "lr": lr, **self._train_epoch(net, train, generator, batch_generator, epoch, tqdm)}
            self.scheduler.step()
            if val is not None:
                row.update({f"val_{k}": v for k, v in self.evaluate(val).items()})
                if row["val_loss"] < state.best_val:
                    state.best_val, state.best_epoch, state.bad_epochs = row["val_loss"], epoch, 0
                    state.best_state = _cpu_state(self.model)
                else:
                    state.bad_epochs += 1
                state.stopped_early = self.patience is not None and state.bad_epochs >= self.patience
            row["seconds"] = time.perf_counter() - t0
            self.history.append(row)
            state.epoch = epoch
            if self.checkpoint_path is not None and self._checkpoint_due(last_checkpoint, epoch, state):
                self._save_checkpoint(state, fingerprint, generator, batch_generator)
                last_checkpoint = time.perf_counter()
            if self._show_progress:
                epochs.set_postfix({k: f"{row[k]:.4f}" for k in ("train_loss", "val_loss") if k in row})
        epochs.close()
        if restore_best and state.best_state is not None:
            self.model.load_state_dict(state.best_state)
        self.best_epoch = state.best_epoch
        self.stopped_early = state.stopped_early
        return self.history
