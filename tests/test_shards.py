"""Image stores as shards that stream from disk: same rows, same batches, same training as in memory."""
from __future__ import annotations

import json
import os
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import musecl.encoders.image as image_module
from musecl.config import RunConfig
from musecl.encoders.image import (ImageStore, ImageTrainingConfig, TripletImageDataset, build_encoder,
                                   embed_regions, train_image_encoder)
from musecl.methods.multisemantic import city_image_store, image_store_plugin
from musecl.scaling.shards import (MANIFEST_JSON, ShardCheckError, ShardedImages, open_shards, shards_from_city,
                                   shards_from_pairs, write_shards)

torch.set_num_threads(2)

SIZE, SHARD_SIZE = 12, 4
COUNTS = [1, 3, 2, 1, 3, 1, 2, 1]  # 14 images over 8 regions: shards of 4, 4, 4, 2 rows


def write_png(path, seed, size=10):
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture()
def pairs(tmp_path):
    """(region_id, path) pairs; region r has COUNTS[r] images of 10-16 px."""
    folder = tmp_path / "png"
    folder.mkdir()
    out, k = [], 0
    for r, count in enumerate(COUNTS):
        for _ in range(count):
            out.append((f"r{r}", write_png(folder / f"img{k}.png", seed=k, size=10 + k % 7)))
            k += 1
    return out


@pytest.fixture()
def stores(pairs, tmp_path):
    memory = ImageStore.from_pairs(pairs, SIZE, kind="satellite")
    sharded = shards_from_pairs(pairs, SIZE, tmp_path / "shards", kind="satellite", shard_size=SHARD_SIZE)
    return memory, sharded


def count_decodes(monkeypatch):
    calls = []
    decode = image_module._decode

    def counting(path, size):
        calls.append(path)
        return decode(path, size)

    monkeypatch.setattr(image_module, "_decode", counting)
    return calls


# -- reading --------------------------------------------------------------------------------


def test_sharded_rows_equal_memory_rows(stores):
    memory, sharded = stores
    images = sharded.images
    assert isinstance(images, ShardedImages) and not sharded.in_memory and memory.in_memory
    assert len(images) == 14 and images.shape == memory.images.shape and images.dtype == torch.uint8
    assert images.numel() == memory.images.numel() and images.n_shards == 4
    for key in (slice(None), slice(0, 4), slice(3, 9), slice(5, 5), slice(2, 13, 3), slice(-3, None)):
        got = images[key]
        assert got.is_contiguous() and got.dtype == torch.uint8
        assert torch.equal(got, memory.images[key]), key
    assert torch.equal(images[7], memory.images[7]) and torch.equal(images[-1], memory.images[-1])
    g = torch.Generator().manual_seed(0)
    for n in (0, 1, 5, 50):  # random order, repeats (50 draws of 14 rows)
        rows = torch.randint(0, 14, (n,), generator=g)
        assert torch.equal(images[rows], memory.images[rows])
        assert torch.equal(images[rows.numpy()], memory.images[rows])
    assert torch.equal(images[torch.tensor([13, 0, 13, 4, -2])], memory.images[torch.tensor([13, 0, 13, 4, -2])])
    with pytest.raises(IndexError, match="row indices"):
        images[torch.tensor([0, 14])]
    assert sharded.region_ids == memory.region_ids and torch.equal(sharded.counts, memory.counts)
    assert sharded.paths == memory.paths and sharded.kind == "satellite"
    assert sharded.fingerprint == memory.fingerprint
    assert "streaming from ShardedImages(" in repr(sharded) and "shards=4" in repr(sharded) and "MiB" in repr(memory)


def test_folder_layout(stores, tmp_path):
    folder = tmp_path / "shards"
    manifest = json.loads((folder / MANIFEST_JSON).read_text())
    assert manifest["kind"] == "satellite" and manifest["size"] == SIZE and manifest["n_images"] == 14
    assert [(s["file"], s["rows"]) for s in manifest["shards"]] == [
        ("shard-00000.npy", 4), ("shard-00001.npy", 4), ("shard-00002.npy", 4), ("shard-00003.npy", 2)]
    assert manifest["fingerprint"] == stores[0].fingerprint
    index = pd.read_csv(folder / "index.csv", dtype={"region_id": str})
    assert index["region_id"].tolist() == [f"r{r}" for r in range(8)] and index["count"].tolist() == COUNTS
    assert np.load(folder / "shard-00003.npy").shape == (2, 3, SIZE, SIZE)
    assert not list(folder.glob(".*.tmp"))


def test_decoding_keeps_one_shard_in_memory(pairs, tmp_path, monkeypatch):
    """Each shard is on disk before the next one's images are decoded, and no (N, ...) tensor is made."""
    folder = tmp_path / "shards"
    seen = []
    decode = image_module._decode

    def watching(path, size):
        seen.append(len(list(folder.glob("shard-*.npy"))))
        return decode(path, size)

    real_empty = torch.empty

    def no_whole_store(*shape, **kw):
        dims = shape[0] if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
        assert not (len(dims) == 4 and dims[0] == len(pairs)), "the whole store was allocated in memory"
        return real_empty(*shape, **kw)

    monkeypatch.setattr(image_module, "_decode", watching)
    monkeypatch.setattr(image_module.torch, "empty", no_whole_store)
    shards_from_pairs(pairs, SIZE, folder, shard_size=SHARD_SIZE)
    assert seen == [i // SHARD_SIZE for i in range(len(pairs))]


# -- the same batches, the same training ---------------------------------------------------


def test_triplet_batches_identical(stores):
    memory, sharded = stores
    rng = np.random.default_rng(0)
    triplets = rng.choice(memory.region_ids, size=(20, 3))
    for augment in ("rot90", "hflip", "none"):
        a = TripletImageDataset(memory, triplets, augment=augment)
        b = TripletImageDataset(sharded, triplets, augment=augment)
        idx = torch.tensor([3, 1, 1, 19, 0, 7])
        got_a = a.get_batch(idx, torch.Generator().manual_seed(4))
        got_b = b.get_batch(idx, torch.Generator().manual_seed(4))
        assert got_a.shape == (18, 3, SIZE, SIZE) and torch.equal(got_a, got_b)


def test_training_and_embedding_identical(stores):
    memory, sharded = stores
    triplets = np.random.default_rng(1).choice(memory.region_ids, size=(16, 3))
    config = ImageTrainingConfig(epochs=1, batch_size=4, val_fraction=0.25, progress=False, seed=3)
    results = []
    for store in (memory, sharded):
        encoder, history = train_image_encoder(build_encoder("tiny", 8, seed=0), store, triplets, config)
        results.append((encoder, history, embed_regions(encoder, store, batch_size=5)))
    (enc_a, hist_a, emb_a), (enc_b, hist_b, emb_b) = results
    assert all(torch.equal(p, q) for p, q in zip(enc_a.state_dict().values(), enc_b.state_dict().values()))
    assert hist_a["train_loss"].tolist() == hist_b["train_loss"].tolist()
    pd.testing.assert_frame_equal(emb_a, emb_b)


# -- reuse, rebuild, checks ----------------------------------------------------------------


def test_reuses_folder_and_rebuilds_when_an_image_changes(pairs, stores, tmp_path, monkeypatch):
    memory, first = stores
    folder = tmp_path / "shards"

    def no_decoding(path, size):
        raise AssertionError("an unchanged shard folder was decoded again")

    with monkeypatch.context() as patch:
        patch.setattr(image_module, "_decode", no_decoding)
        again = shards_from_pairs(pairs, SIZE, folder, kind="satellite", shard_size=SHARD_SIZE)
    assert torch.equal(again.images[:], memory.images)
    write_png(pairs[5][1], seed=99, size=13)  # an image changed: rebuilt
    calls = count_decodes(monkeypatch)
    opened = []
    with monkeypatch.context() as patch:  # the out-of-date shards are not hashed (nor kept open) first
        patch.setattr(ShardedImages, "verify", lambda self, once=False: opened.append(self.folder))
        changed = shards_from_pairs(pairs, SIZE, folder, kind="satellite", shard_size=SHARD_SIZE)
    assert len(opened) == 1  # the new folder only
    assert len(calls) == len(pairs) and changed.fingerprint != first.fingerprint
    assert not torch.equal(changed.images[5], memory.images[5]) and torch.equal(changed.images[6], memory.images[6])
    bigger = shards_from_pairs(pairs, SIZE + 4, folder, shard_size=SHARD_SIZE)  # another size: rebuilt
    assert bigger.size == SIZE + 4 and len(calls) == 2 * len(pairs)


def test_interrupted_write_is_rebuilt(pairs, stores, tmp_path, monkeypatch):
    memory, _ = stores
    folder = tmp_path / "shards"
    (folder / MANIFEST_JSON).unlink()  # as if the write had stopped before its last step
    calls = count_decodes(monkeypatch)
    rebuilt = shards_from_pairs(pairs, SIZE, folder, shard_size=SHARD_SIZE)
    assert len(calls) == len(pairs) and torch.equal(rebuilt.images[:], memory.images)

    decode = image_module._decode

    def dies_at_image_9(path, size):  # a crash half-way: two new shards written, no manifest
        if len(calls) == len(pairs) + 9:
            raise KeyboardInterrupt
        return decode(path, size)

    write_png(pairs[0][1], seed=50)
    with monkeypatch.context() as patch:
        patch.setattr(image_module, "_decode", dies_at_image_9)
        with pytest.raises(KeyboardInterrupt):
            shards_from_pairs(pairs, SIZE, folder, shard_size=SHARD_SIZE)
    assert not (folder / MANIFEST_JSON).exists() and not list(folder.glob(".*.tmp"))
    with pytest.raises(FileNotFoundError, match="interrupted"):
        open_shards(folder)
    fresh = shards_from_pairs(pairs, SIZE, folder, shard_size=SHARD_SIZE)
    assert torch.equal(fresh.images[1:], memory.images[1:]) and not torch.equal(fresh.images[0], memory.images[0])


def test_verify_catches_a_corrupted_shard(stores, tmp_path):
    _, sharded = stores
    sharded.images.verify()
    path = tmp_path / "shards" / "shard-00001.npy"
    raw = bytearray(path.read_bytes())
    raw[-5] ^= 0xFF  # one byte of image data: the header still reads, the hash does not
    path.write_bytes(bytes(raw))
    with pytest.raises(ShardCheckError, match="shard-00001.npy is corrupted"):
        sharded.images.verify()  # a store opened before the change: verify() re-hashes every shard
    with pytest.raises(ShardCheckError, match="shard-00001.npy is corrupted"):
        open_shards(tmp_path / "shards")  # opening hashes the changed shard again
    np.save(path, np.zeros((3, 3, SIZE, SIZE), dtype=np.uint8))  # a shard of the wrong shape: caught on opening
    with pytest.raises(ShardCheckError, match=r"shard-00001.npy holds uint8 \(3, 3, 12, 12\)"):
        open_shards(tmp_path / "shards")


def test_flipped_byte_in_a_shard_is_named_and_rebuilt(pairs, stores, tmp_path, monkeypatch):
    """Opening hashes each shard once per process: a changed byte is never streamed into training."""
    memory, _ = stores
    path = tmp_path / "shards" / "shard-00002.npy"
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0x01
    path.write_bytes(bytes(raw))
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))  # a later write, whatever the clock
    calls = count_decodes(monkeypatch)
    with pytest.warns(UserWarning, match=r"shard-00002.npy is corrupted.*rebuilding"):
        rebuilt = shards_from_pairs(pairs, SIZE, tmp_path / "shards", kind="satellite",
                                   shard_size=SHARD_SIZE)
    assert len(calls) == len(pairs) and torch.equal(rebuilt.images[:], memory.images)
    open_shards(tmp_path / "shards")  # checked (written by this process): opens without a warning


def test_unreadable_folder_is_rebuilt_with_a_warning(pairs, stores, tmp_path):
    memory, _ = stores
    (tmp_path / "shards" / "shard-00002.npy").write_bytes(b"not a numpy file")
    with pytest.warns(UserWarning, match="rebuilding"):
        rebuilt = shards_from_pairs(pairs, SIZE, tmp_path / "shards", shard_size=SHARD_SIZE)
    assert torch.equal(rebuilt.images[:], memory.images)


# -- converting and devices ----------------------------------------------------------------


def test_write_open_and_load_into_memory(stores, tmp_path):
    memory, sharded = stores
    copy = write_shards(memory, tmp_path / "copy", shard_size=5)
    assert not copy.in_memory and copy.images.n_shards == 3 and torch.equal(copy.images[:], memory.images)
    assert copy.paths == memory.paths and copy.fingerprint == memory.fingerprint
    smaller = write_shards(ImageStore(memory.images[:3], ["a", "b"], [1, 2], kind="streetview"), tmp_path / "copy")
    assert sorted(p.name for p in (tmp_path / "copy").glob("shard-*.npy")) == ["shard-00000.npy"]  # old shards gone
    assert smaller.region_ids == ["a", "b"] and smaller.paths is None and smaller.kind == "streetview"
    loaded = sharded.load_into_memory()
    assert loaded.in_memory and torch.equal(loaded.images, memory.images) and loaded.fingerprint == memory.fingerprint
    assert memory.load_into_memory() is memory
    with pytest.raises(ValueError, match="while reading"):
        write_shards(sharded, tmp_path / "shards")
    with pytest.raises(ValueError, match="load_into_memory"):
        sharded.save(tmp_path / "x.pt")


def test_devices(stores, monkeypatch):
    memory, sharded = stores
    on_cpu = memory.to("cpu")
    assert torch.equal(on_cpu.images, memory.images) and on_cpu.region_ids == memory.region_ids
    assert on_cpu.device.type == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert memory.pin_memory() is memory
    with pytest.raises(ValueError, match="load_into_memory"):
        sharded.to("cpu")
    with pytest.raises(ValueError, match="load_into_memory"):
        sharded.pin_memory()


def test_store_arguments(pairs, tmp_path):
    with pytest.raises(ValueError, match="shard_size"):
        shards_from_pairs(pairs, SIZE, tmp_path / "s", shard_size=0)
    with pytest.raises(ValueError, match="at least 8 pixels"):
        shards_from_pairs(pairs, 4, tmp_path / "s")


# -- the run pipeline ----------------------------------------------------------------------


def test_run_config_image_store():
    assert RunConfig().machine.image_store == "memory"
    assert RunConfig.from_dict({"image_store": "shards"}).machine.image_store == "shards"
    with pytest.raises(ValueError, match="image_store must be one of"):
        RunConfig(image_store="disk")


def test_pipeline_names_one_entry_per_city_kind_and_size(pairs, tmp_path):
    by_region: dict[str, str] = {}
    for rid, path in pairs:
        by_region.setdefault(rid, path)  # one satellite image per region
    city = SimpleNamespace(name="toy", satellite_paths=lambda: by_region)
    cache = SimpleNamespace(root=tmp_path / "cache")
    sharded = city_image_store(city, "satellite", SIZE, cache, progress=False, image_store="shards", fingerprint="f0")
    assert not sharded.in_memory and (tmp_path / "cache" / "images" / "satellite-12-f0-shards" / MANIFEST_JSON).exists()
    memory = city_image_store(city, "satellite", SIZE, cache, progress=False, image_store="memory", fingerprint="f0")
    assert memory.in_memory and (tmp_path / "cache" / "images" / "satellite-12-f0.pt").exists()
    assert torch.equal(sharded.images[:], memory.images)


def test_the_shards_store_is_found_by_its_entry_point(tmp_path):
    """The core names no scaling module: "shards" is an installed plugin (pyproject.toml)."""
    assert image_store_plugin("shards") is shards_from_city
    with pytest.raises(ValueError, match=r"image_store 'disk' is not installed; installed: \['memory', 'shards'"):
        image_store_plugin("disk")


def test_two_writers_of_one_folder_wait_for_each_other(pairs, tmp_path, monkeypatch):
    """Two methods decoding the same images side by side (jobs > 1) build one folder in turn: the
    second finds the first's shards instead of deleting its temporary files."""
    import time
    from concurrent.futures import ThreadPoolExecutor

    memory = ImageStore.from_pairs(pairs, SIZE, kind="satellite")
    calls = count_decodes(monkeypatch)
    counted = image_module._decode

    def slow(path, size):  # long enough that the two writers overlap: without the lock both decode
        time.sleep(0.02)
        return counted(path, size)

    monkeypatch.setattr(image_module, "_decode", slow)
    folder = tmp_path / "shared"
    with ThreadPoolExecutor(2) as pool:
        stores = list(pool.map(lambda _: shards_from_pairs(pairs, SIZE, folder, kind="satellite",
                                                           shard_size=SHARD_SIZE), range(2)))
    assert len(calls) == len(pairs)  # each image decoded once: the second writer read the first's shards
    assert all(torch.equal(store.images[:], memory.images) for store in stores)
    assert not list(folder.glob("*.tmp"))
