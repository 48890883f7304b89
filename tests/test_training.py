"""The one trainer: falling loss, determinism, early stopping, checkpoints, exact resume."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from torch import nn

from musecl.training import (
    TensorBatches, Trainer, as_batch_dataset, load_state, split_indices,
)

torch.set_num_threads(1)


def mse(model, batch):
    x, y = batch
    pred = model(x)
    return {"loss": ((pred - y) ** 2).mean(), "abs": (pred - y).abs().mean()}


class NoisyData:
    """A data set that draws from the generator it is given (as the image triplets do)."""

    def __init__(self, n=64, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, 5, generator=g)
        self.y = self.x @ torch.arange(1.0, 6.0).unsqueeze(1) + 0.5

    def __len__(self):
        return len(self.x)

    def get_batch(self, idx, generator=None):
        noise = torch.randn(len(idx), 5, generator=generator) * 0.01
        return self.x[idx] + noise, self.y[idx]


def noisy_mse(model, batch):
    # also draws from numpy's and python's global generators, which the checkpoint must restore
    scale = 1.0 + 0.01 * float(np.random.rand()) + 0.01 * random.random()
    out = mse(model, batch)
    out["loss"] = out["loss"] * scale
    return out


def make_model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 1))


def params(model):
    return [p.detach().clone() for p in model.state_dict().values()]


def trainer(model, **kw):
    base = dict(lr=1e-2, epochs=4, batch_size=8, seed=3, progress=False, lr_step=1, lr_gamma=0.9)
    base.update(kw)
    return Trainer(model, base.pop("loss_fn", noisy_mse), **base)


def test_split_indices():
    tr, va = split_indices(10, 0.3, seed=1)
    assert len(tr) == 7 and len(va) == 3 and not set(tr) & set(va) and set(tr) | set(va) == set(range(10))
    assert np.array_equal(split_indices(10, 0.3, seed=1)[1], va)
    assert len(split_indices(5, 0.0)[1]) == 0
    assert len(split_indices(1, 0.5)[0]) == 1  # never empties the training set
    with pytest.raises(ValueError, match="val_fraction"):
        split_indices(10, 1.0)


def test_as_batch_dataset():
    x = torch.arange(6.0)
    assert torch.equal(as_batch_dataset(x).get_batch(torch.tensor([1, 3])), torch.tensor([1.0, 3.0]))
    assert len(as_batch_dataset((x, x))) == 6
    with pytest.raises(ValueError, match="same number"):
        TensorBatches(x, x[:3])
    with pytest.raises(TypeError, match="get_batch"):
        as_batch_dataset([1, 2, 3])


def test_loss_falls_and_history():
    data = NoisyData()
    model = make_model()
    hist = trainer(model, loss_fn=mse, epochs=6, lr=5e-2).fit(data, NoisyData(16, seed=1))
    assert [h["epoch"] for h in hist] == list(range(1, 7))
    assert hist[-1]["train_loss"] < 0.5 * hist[0]["train_loss"]
    assert hist[-1]["val_loss"] < hist[0]["val_loss"]
    assert {"lr", "train_abs", "val_abs", "images_per_s", "seconds"} <= set(hist[0])
    assert hist[0]["images_per_s"] > 0
    assert hist[1]["lr"] == pytest.approx(0.9 * hist[0]["lr"])  # StepLR(1, 0.9) here


def test_same_seed_same_weights():
    a, b = make_model(), make_model()
    trainer(a).fit(NoisyData(), NoisyData(16, seed=1))
    trainer(b).fit(NoisyData(), NoisyData(16, seed=1))
    assert all(torch.equal(p, q) for p, q in zip(params(a), params(b)))
    c = make_model()
    trainer(c, seed=4).fit(NoisyData(), NoisyData(16, seed=1))
    assert not all(torch.equal(p, q) for p, q in zip(params(a), params(c)))


class Crash(Exception):
    pass


def crash_after(n_calls):
    calls = {"n": 0}

    def loss_fn(model, batch):
        if model.training:
            calls["n"] += 1
            if calls["n"] > n_calls:
                raise Crash()
        return noisy_mse(model, batch)

    return loss_fn


@pytest.mark.parametrize("restore_best", [False, True])
def test_resume_equals_uninterrupted(tmp_path, restore_best):
    train, val = NoisyData(), NoisyData(16, seed=1)
    straight = make_model()
    hist = trainer(straight, restore_best=restore_best, checkpoint_dir=tmp_path / "a").fit(train, val)

    crashed = make_model()
    with pytest.raises(Crash):  # 8 batches per epoch: dies in the middle of epoch 3
        trainer(crashed, loss_fn=crash_after(20), restore_best=restore_best,
                checkpoint_dir=tmp_path / "b", checkpoint_every_s=0).fit(train, val)
    assert load_state(tmp_path / "b" / "last.pt")["epoch"] == 2
    torch.manual_seed(123)  # a fresh process would have other global RNG states: resume must not care
    np.random.seed(9)
    resumed = make_model(seed=7)  # and other initial weights
    hist2 = trainer(resumed, restore_best=restore_best, checkpoint_dir=tmp_path / "b", resume=True).fit(train, val)
    assert all(torch.equal(p, q) for p, q in zip(params(straight), params(resumed)))
    assert [h["train_loss"] for h in hist] == [h["train_loss"] for h in hist2]

    # stopping cleanly at 2 epochs and extending to 4 gives the same weights too
    short = make_model()
    trainer(short, epochs=2, restore_best=restore_best, checkpoint_dir=tmp_path / "c").fit(train, val)
    longer = make_model(seed=5)
    trainer(longer, restore_best=restore_best, checkpoint_dir=tmp_path / "c", resume=True).fit(train, val)
    assert all(torch.equal(p, q) for p, q in zip(params(straight), params(longer)))


def test_checkpoints_are_written_by_the_clock_and_after_the_last_epoch(tmp_path, monkeypatch):
    written = []
    monkeypatch.setattr(Trainer, "_write_checkpoint", lambda self, state, *a: written.append(state.epoch))
    train, val = NoisyData(), NoisyData(16, seed=1)
    trainer(make_model(), epochs=4, checkpoint_dir=tmp_path, checkpoint_every_s=0).fit(train, val)
    assert written == [1, 2, 3, 4]
    written.clear()
    trainer(make_model(), epochs=4, checkpoint_dir=tmp_path, checkpoint_every_s=1e9).fit(train, val)
    assert written == [4]  # not yet due, but the run is over: the last epoch is kept
    written.clear()
    trainer(make_model(), epochs=50, patience=1, checkpoint_dir=tmp_path, checkpoint_every_s=1e9).fit(train, val)
    assert len(written) == 1 and written[0] < 50  # stopped early: that epoch is kept
    with pytest.raises(ValueError, match="checkpoint_every_s"):
        trainer(make_model(), checkpoint_every_s=-1)


def test_a_checkpoint_from_before_min_batch_still_resumes(tmp_path):
    """Checkpoints written before ``min_batch`` replaced ``drop_last`` carry ``drop_last: False``."""
    train, val = NoisyData(), NoisyData(16, seed=1)
    straight = make_model()
    trainer(straight, checkpoint_dir=tmp_path / "a").fit(train, val)
    short = make_model()
    trainer(short, epochs=2, checkpoint_dir=tmp_path / "b").fit(train, val)
    ckpt = load_state(tmp_path / "b" / "last.pt")
    ckpt["fingerprint"]["drop_last"] = False  # as the older Trainer wrote it
    torch.save(ckpt, tmp_path / "b" / "last.pt")
    resumed = make_model(seed=5)
    trainer(resumed, checkpoint_dir=tmp_path / "b", resume=True).fit(train, val)
    assert all(torch.equal(p, q) for p, q in zip(params(straight), params(resumed)))
    ckpt["fingerprint"]["drop_last"] = True  # a run that did drop short batches is another run
    torch.save(ckpt, tmp_path / "b" / "last.pt")
    with pytest.raises(ValueError, match="drop_last"):
        trainer(make_model(), checkpoint_dir=tmp_path / "b", resume=True).fit(train, val)


def test_checkpoint_contents_load_weights_only(tmp_path):
    trainer(make_model(), epochs=2, checkpoint_dir=tmp_path).fit(NoisyData(), NoisyData(16, seed=1))
    path = tmp_path / "last.pt"
    ckpt = torch.load(path, weights_only=True)
    assert {"model", "optimizer", "scheduler", "epoch", "best_state", "best_val", "history", "rng"} <= set(ckpt)
    assert {"torch", "numpy", "python", "data"} <= set(ckpt["rng"])
    assert ckpt["epoch"] == 2 and len(ckpt["history"]) == 2
    assert not [p for p in tmp_path.iterdir() if p.name != "last.pt"]  # no temporary files left


def test_resume_refuses_a_different_run(tmp_path):
    trainer(make_model(), epochs=1, checkpoint_dir=tmp_path).fit(NoisyData(), None)
    with pytest.raises(ValueError, match="batch_size"):
        trainer(make_model(), batch_size=4, checkpoint_dir=tmp_path, resume=True).fit(NoisyData(), None)
    with pytest.raises(ValueError, match="checkpoint_dir"):
        trainer(make_model(), resume=True)


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_corrupt_checkpoint_is_named_moved_aside_and_training_starts_afresh(tmp_path, damage):
    train, val = NoisyData(), NoisyData(16, seed=1)
    straight = make_model()
    trainer(straight, checkpoint_dir=tmp_path / "a").fit(train, val)
    trainer(make_model(), epochs=2, checkpoint_dir=tmp_path / "b").fit(train, val)
    path = tmp_path / "b" / "last.pt"
    raw = path.read_bytes()
    path.write_bytes(raw[:len(raw) // 2] if damage == "truncated" else b"not a checkpoint" * 10)
    with pytest.warns(UserWarning, match=r"checkpoint .*last\.pt is corrupt .*moved it to last\.pt\.corrupt-"):
        resumed = make_model()
        hist = trainer(resumed, checkpoint_dir=tmp_path / "b", resume=True).fit(train, val)
    assert len(hist) == 4 and load_state(path)["epoch"] == 4  # from epoch 1, wrote a sound last.pt
    assert all(torch.equal(p, q) for p, q in zip(params(straight), params(resumed)))  # = a fresh run
    aside = [p for p in (tmp_path / "b").iterdir() if p.name.startswith("last.pt.corrupt-")]
    assert len(aside) == 1 and aside[0].read_bytes() != raw  # the damaged file, kept for inspection


def test_early_stopping_and_restore_best():
    def flat_val(model, batch):  # validation loss never improves after epoch 1
        out = mse(model, batch)
        if not model.training:
            out["loss"] = torch.tensor(1.0)
        return out

    model = make_model()
    t = trainer(model, loss_fn=flat_val, epochs=20, patience=2)
    hist = t.fit(NoisyData(), NoisyData(16, seed=1))
    assert len(hist) == 3 and t.stopped_early and t.best_epoch == 1
    one = make_model()  # the same run cut after its first epoch: the weights the best epoch left
    trainer(one, loss_fn=flat_val, epochs=1).fit(NoisyData(), NoisyData(16, seed=1))
    assert all(torch.equal(p, q) for p, q in zip(params(model), params(one)))  # restored
    kept = make_model()
    trainer(kept, loss_fn=flat_val, epochs=20, patience=2, restore_best=False).fit(NoisyData(), NoisyData(16, seed=1))
    assert not all(torch.equal(p, q) for p, q in zip(params(kept), params(one)))  # the last epoch's, otherwise
    with pytest.raises(ValueError, match="validation set"):
        trainer(make_model(), patience=2).fit(NoisyData(), None)


def test_nan_loss_is_reported():
    def nan_loss(model, batch):
        return {"loss": mse(model, batch)["loss"] * float("nan")}

    with pytest.raises(FloatingPointError, match="learning rate"):
        trainer(make_model(), loss_fn=nan_loss, epochs=1).fit(NoisyData(), None)


def test_bf16_mixed_precision_trains_and_fp16_needs_a_gpu(tmp_path):
    data = NoisyData()
    full = trainer(make_model(), epochs=6).fit(data, None)
    mixed_trainer = trainer(make_model(), epochs=6, amp="bf16", checkpoint_dir=tmp_path)
    mixed = mixed_trainer.fit(data, None)
    assert mixed[-1]["train_loss"] < mixed[0]["train_loss"]  # it learns in bfloat16 too
    assert abs(mixed[-1]["train_loss"] - full[-1]["train_loss"]) < 0.5 * full[0]["train_loss"]
    assert all(p.dtype == torch.float32 for p in mixed_trainer.model.parameters())  # weights stay fp32
    assert load_state(tmp_path / "last.pt")["fingerprint"]["amp"] == "torch.bfloat16"
    with pytest.raises(ValueError, match="resume"):  # a full-precision run cannot resume a bf16 one
        trainer(make_model(), epochs=7, checkpoint_dir=tmp_path, resume=True).fit(data, None)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA"):
            trainer(make_model(), amp="fp16")
    from musecl.training import cpu_has_native_bf16, cuda_has_native_bf16

    if torch.cuda.is_available():
        expected = torch.bfloat16 if cuda_has_native_bf16(torch.device("cuda")) else torch.float16
    else:
        expected = torch.bfloat16 if cpu_has_native_bf16() else None
    assert trainer(make_model(), amp="auto", device="auto").amp_dtype is expected


def test_auto_precision_on_a_gpu_is_bf16_where_it_exists(monkeypatch):
    """Where the GPU has bf16 units (compute capability >= 8): a V100 or T4 only emulates it,
    though torch.cuda.is_bf16_supported() says yes."""
    from musecl.training import amp_dtype

    cuda = torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a, **k: (9, 0))
    assert amp_dtype("auto", cuda) is torch.bfloat16  # no gradient scaler, no sync per step
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a, **k: (7, 0))
    assert amp_dtype("auto", cuda) is torch.float16  # older GPUs


def test_auto_precision_on_an_x86_cpu_needs_bf16_instructions(monkeypatch):
    """oneDNN's check says yes on any AVX-512 CPU, where bf16 is emulated (1.9x slower)."""
    from musecl import training

    monkeypatch.setattr(training.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    assert training.amp_dtype("auto", torch.device("cpu")) is None
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    assert training.amp_dtype("auto", torch.device("cpu")) is torch.bfloat16
    with pytest.raises(ValueError, match="amp must be"):
        trainer(make_model(), amp="half")


def test_min_batch_skips_short_batches_and_val_batch_size_sets_the_validation_batches():
    """What fusion (InfoNCE: no batch of one) and the probe (the whole validation part at once) use."""
    seen = []

    def recording(model, batch):
        seen.append((model.training, len(batch[0])))
        return mse(model, batch)

    data = NoisyData(n=20)
    trainer(make_model(), loss_fn=recording, epochs=1, batch_size=8, min_batch=5, val_batch_size=7).fit(
        data, NoisyData(n=15, seed=1))
    assert sorted(n for training, n in seen if training) == [8, 8]  # 20 = 8 + 8 + 4: the 4 is skipped
    assert [n for training, n in seen if not training] == [7, 7]  # 15 = 7 + 7 + 1: the 1 is skipped
    seen.clear()
    trainer(make_model(), loss_fn=recording, epochs=1, batch_size=8).fit(data, NoisyData(n=15, seed=1))
    assert sorted(n for training, n in seen if training) == [4, 8, 8]
    assert [n for training, n in seen if not training] == [8, 7]
    with pytest.raises(ValueError, match="min_batch"):
        trainer(make_model(), batch_size=8, min_batch=9)
