"""Several processes (DistributedDataParallel over Gloo on the CPU): the same trainer, the same
guarantees. Two processes with batch B must train exactly like one process with batch 2B, log the
same history on every process, and resume exactly from a checkpoint."""
import tempfile
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

from musecl.scaling.distributed import TorchProcesses, join_process_group, leave_process_group
from musecl.training import OneProcess, Trainer, processes

WORLD = 2
N_TRAIN, N_VAL, BATCH = 40, 10, 4  # 40 = 5 steps of 2 x 4 items: no padding needed


def _data(seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N_TRAIN + N_VAL, 5, generator=g)
    y = x @ torch.randn(5, generator=g) + 0.1 * torch.randn(N_TRAIN + N_VAL, generator=g)
    return (x[:N_TRAIN], y[:N_TRAIN]), (x[N_TRAIN:], y[N_TRAIN:])


def _mse(model, batch):
    x, y = batch
    return {"loss": F.mse_loss(model(x).squeeze(-1), y)}


class NoisyBatches:
    """Draws from the data generator in get_batch (as image choice and augmentation do)."""

    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.x)

    def get_batch(self, indices, generator=None):
        noise = 0.05 * torch.randn(len(indices), self.x.shape[1], generator=generator)
        return self.x[indices] + noise, self.y[indices]


def _dropout_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 1))


def _weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _scenarios(folder: Path) -> dict:
    """What each process trains; returns weights and histories (run in every process)."""
    train, val = _data()
    out = {}
    torch.manual_seed(0)
    linear = nn.Linear(5, 1)
    trainer = Trainer(linear, _mse, lr=0.01, epochs=3, batch_size=BATCH, seed=0, progress=False)
    out["linear_history"] = trainer.fit(train, val)
    out["linear"] = _weights(linear)

    kwargs = dict(lr=0.01, batch_size=BATCH, seed=3, progress=False)
    full = _dropout_model()
    Trainer(full, _mse, epochs=3, checkpoint_dir=folder / "full", **kwargs).fit(NoisyBatches(*train), val)
    out["uninterrupted"] = _weights(full)
    part = _dropout_model()
    Trainer(part, _mse, epochs=2, checkpoint_dir=folder / "part", **kwargs).fit(NoisyBatches(*train), val)
    resumed = _dropout_model()  # a fresh process would start from scratch weights
    Trainer(resumed, _mse, epochs=3, checkpoint_dir=folder / "part", resume=True, **kwargs).fit(
        NoisyBatches(*train), val)
    out["resumed"] = _weights(resumed)
    return out


def _worker(rank: int, world: int, init_file: str, folder: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    join_process_group()
    try:
        assert isinstance(processes(), TorchProcesses) and processes().world_size() == world
        torch.set_num_threads(1)
        torch.save(_scenarios(Path(folder)), Path(folder) / f"rank{rank}.pt")
    finally:
        leave_process_group()


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ddp")
    init_file = Path(tempfile.mkdtemp()) / "init"
    mp.spawn(_worker, args=(WORLD, str(init_file), str(folder)), nprocs=WORLD, join=True)
    return folder, [torch.load(folder / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


def test_outside_a_process_group_everything_is_one_process():
    group = processes()
    assert type(group) is OneProcess
    assert not group.active() and group.rank() == 0 and group.world_size() == 1 and group.is_main()
    order = torch.arange(7)
    assert torch.equal(group.shard(order), order)
    assert group.gather("x") == ["x"]
    model = nn.Linear(2, 1)
    assert group.wrap(model, torch.device("cpu")) is model
    join_process_group()  # no torch.distributed group: still one process
    assert type(processes()) is OneProcess


def test_two_processes_train_like_one_process_with_twice_the_batch(two_processes):
    _, ranks = two_processes
    train, val = _data()
    torch.manual_seed(0)
    linear = nn.Linear(5, 1)
    history = Trainer(linear, _mse, lr=0.01, epochs=3, batch_size=WORLD * BATCH, seed=0, progress=False).fit(train, val)
    for r in ranks:
        for k, v in _weights(linear).items():
            torch.testing.assert_close(r["linear"][k], v, atol=1e-6, rtol=1e-5)
        for mine, single in zip(r["linear_history"], history):
            assert mine["train_loss"] == pytest.approx(single["train_loss"], rel=1e-5)
            assert mine["val_loss"] == pytest.approx(single["val_loss"], rel=1e-5)


def test_every_process_ends_with_the_same_weights_and_history(two_processes):
    _, (r0, r1) = two_processes
    for key in ("linear", "uninterrupted", "resumed"):
        for name in r0[key]:
            assert torch.equal(r0[key][name], r1[key][name]), (key, name)
    assert r0["linear_history"] == [{**row, "seconds": r0["linear_history"][i]["seconds"],
                                     "train_seconds": r0["linear_history"][i]["train_seconds"],
                                     "images_per_s": r0["linear_history"][i]["images_per_s"]}
                                    for i, row in enumerate(r1["linear_history"])]


def test_resume_under_two_processes_is_exact(two_processes):
    _, ranks = two_processes
    for r in ranks:
        for name, value in r["uninterrupted"].items():
            assert torch.equal(r["resumed"][name], value), name


def test_a_checkpoint_of_two_processes_is_refused_by_one(two_processes):
    folder, _ = two_processes
    train, val = _data()
    trainer = Trainer(_dropout_model(), _mse, lr=0.01, batch_size=BATCH, seed=3, epochs=4, progress=False,
                      checkpoint_dir=folder / "full", resume=True)
    with pytest.raises(ValueError, match="processes"):
        trainer.fit(NoisyBatches(*train), val)


def test_torchrun_trains_the_encoders_that_musecl_run_then_reuses(tmp_path):
    """The documented command, end to end: two Gloo processes train the satellite encoder into the
    cache; one process with the same settings finds it; a fresh cache gets a clear error."""
    import os
    import subprocess
    import sys

    import pandas as pd
    import yaml

    from musecl.cache import Cache
    from musecl.city import SATELLITE, load_city
    from musecl.config import RunConfig
    from musecl.datasets.toy import make_toy_city
    from musecl.methods.multisemantic import image_stage

    city = make_toy_city(tmp_path / "city", n_regions=40, seed=1, image_size=32, progress=False)
    settings = {"n_triplets": 64, "rs_arch": "tiny", "rs_image_size": 32, "rs_epochs": 2, "rs_batch_size": 8,
                "train_processes": WORLD}
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(settings))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    torchrun = Path(sys.executable).parent / "torchrun"
    done = subprocess.run([str(torchrun), "--nproc_per_node", str(WORLD), "-m", "musecl.cli", "train-encoders",
                           str(city), "--params", str(params), "--out", str(tmp_path / "out"), "--kinds", "satellite"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "satellite encoder:" in done.stdout
    trained = list((tmp_path / "out" / "cache" / "encoder-satellite").iterdir())
    assert len(trained) == 1 and (trained[0] / "key.json").exists()
    assert len(pd.read_csv(trained[0] / "history.csv")) == 2

    cfg = RunConfig.from_dict(settings)
    found = image_stage(load_city(city), cfg, SATELLITE, Cache(tmp_path / "out" / "cache"), progress=False)
    assert found == trained[0]
    with pytest.raises(RuntimeError, match="torchrun --nproc_per_node=2"):
        image_stage(load_city(city), cfg, SATELLITE, Cache(tmp_path / "fresh"), progress=False)
