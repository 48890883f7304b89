"""The GPU paths (skipped without CUDA): float16 autocast with a checkpointed gradient scaler,
images stored on the GPU, batches through pinned memory, several processes on a GPU."""
import tempfile
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

from musecl.encoders.image import (ImageStore, ImageTrainingConfig, TripletImageDataset, build_encoder,
                                   embed_regions, train_image_encoder)
from musecl.training import Trainer, load_state

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _store(n_regions=24, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    counts = torch.randint(1, 3, (n_regions,), generator=g)
    images = torch.randint(0, 256, (int(counts.sum()), 3, size, size), dtype=torch.uint8, generator=g)
    return ImageStore(images, [f"r{i}" for i in range(n_regions)], counts, kind="streetview")


def _triplets(n=48, n_regions=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, n_regions, (n, 3), generator=g).numpy()


@pytest.fixture(autouse=True)
def deterministic():
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    yield


def test_fp16_training_checkpoints_the_scaler_and_resumes(tmp_path):
    store, triplets = _store(), _triplets()
    settings = dict(loss="cosine", batch_size=8, val_fraction=0.25, seed=0, device="cuda", amp="fp16", progress=False)
    full, history = train_image_encoder(build_encoder("tiny", 16, seed=0), store, triplets,
                                        ImageTrainingConfig(epochs=3, checkpoint_dir=str(tmp_path / "a"), **settings))
    assert history["train_loss"].notna().all() and (history["images_per_s"] > 0).all()
    ckpt = load_state(tmp_path / "a" / "last.pt")
    assert ckpt["scaler"] is not None and ckpt["scaler"]["scale"] > 0
    train_image_encoder(build_encoder("tiny", 16, seed=0), store, triplets,
                        ImageTrainingConfig(epochs=2, checkpoint_dir=str(tmp_path / "b"), **settings))
    resumed, _ = train_image_encoder(build_encoder("tiny", 16, seed=0), store, triplets,
                                     ImageTrainingConfig(epochs=3, checkpoint_dir=str(tmp_path / "b"), resume=True,
                                                         **settings))
    for (name, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4, msg=name)


@pytest.mark.parametrize("amp", ["off", "bf16", "fp16", "auto"])
def test_training_and_embedding_on_the_gpu(amp):
    store = _store()
    encoder, history = train_image_encoder(build_encoder("tiny", 16, seed=0), store, _triplets(),
                                           ImageTrainingConfig(epochs=1, batch_size=8, device="cuda", amp=amp,
                                                               progress=False))
    assert next(encoder.parameters()).device.type == "cuda"
    table = embed_regions(encoder, store, amp=amp)
    assert table.shape == (store.n_regions, 16) and table.notna().all().all()


def test_a_store_on_the_gpu_serves_the_same_batches():
    store = _store()
    on_gpu = store.to("cuda")
    assert on_gpu.images.device.type == "cuda"
    idx = torch.arange(10)
    a = TripletImageDataset(store, _triplets()).get_batch(idx, torch.Generator().manual_seed(3))
    b = TripletImageDataset(on_gpu, _triplets()).get_batch(idx, torch.Generator().manual_seed(3))
    assert b.device.type == "cuda" and torch.equal(a, b.cpu())


def test_store_on_gpu_and_on_host_train_the_same_encoder():
    store, triplets = _store(), _triplets()
    config = ImageTrainingConfig(epochs=2, batch_size=8, val_fraction=0, device="cuda", progress=False)
    host, _ = train_image_encoder(build_encoder("tiny", 16, seed=0), store, triplets, config)
    device, _ = train_image_encoder(build_encoder("tiny", 16, seed=0), store.to("cuda"), triplets, config)
    for (name, a), b in zip(host.state_dict().items(), device.state_dict().values()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5, msg=name)


def _mse(model, batch):
    x, y = batch
    return {"loss": F.mse_loss(model(x).squeeze(-1), y)}


def _data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 5, generator=g)
    return x, x @ torch.randn(5, generator=g)


def _worker(rank, world, init_file, out):
    from musecl.scaling.distributed import join_process_group, leave_process_group

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    join_process_group()
    try:
        torch.manual_seed(0)
        model = nn.Linear(5, 1)
        Trainer(model, _mse, lr=0.01, epochs=3, batch_size=4, device="cuda:0", progress=False).fit(_data())
        torch.save({k: v.cpu() for k, v in model.state_dict().items()}, Path(out) / f"rank{rank}.pt")
    finally:
        leave_process_group()


def test_two_processes_on_one_gpu_train_like_one_with_twice_the_batch(tmp_path):
    """DistributedDataParallel with CUDA tensors (over Gloo: NCCL refuses two processes on one GPU)."""
    mp.spawn(_worker, args=(2, str(Path(tempfile.mkdtemp()) / "init"), str(tmp_path)), nprocs=2, join=True)
    torch.manual_seed(0)
    single = nn.Linear(5, 1)
    Trainer(single, _mse, lr=0.01, epochs=3, batch_size=8, device="cuda", progress=False).fit(_data())
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    for name, value in single.state_dict().items():
        assert torch.equal(ranks[0][name], ranks[1][name])
        torch.testing.assert_close(ranks[0][name], value.cpu(), atol=1e-5, rtol=1e-4)


def test_training_puts_the_images_on_the_gpu_when_they_fit():
    from musecl.encoders.image import _store_for_training

    store = _store()
    assert _store_for_training(store, ImageTrainingConfig(device="cuda")).device.type == "cuda"
    assert _store_for_training(store, ImageTrainingConfig(device="cuda", store_on_device=False)) is store
    assert _store_for_training(store, ImageTrainingConfig(device="cpu")) is store
