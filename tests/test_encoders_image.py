"""Image encoders (eq. 5-6): losses by hand, the image store, encoders, embeddings, training."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from musecl.city import CityMeta, Indicator, load_city, write_city
from musecl.encoders.image import (
    ImageStore, TripletImageDataset, TripletObjective, augment_images, build_encoder,
    cosine_triplet_loss, embed_regions, euclidean_margin_ranking_loss, imagenet_weights_file,
    load_encoder, save_encoder, train_image_encoder,
)
from musecl.sampling import Triplets

torch.set_num_threads(2)


# -- losses on vectors a reader can check on paper ---------------------------------------


def test_cosine_triplet_loss_by_hand():
    a = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    p = torch.tensor([[2.0, 0.0], [0.0, 1.0]])  # sim(a, p) = 1, then 0
    n = torch.tensor([[0.0, 3.0], [1.0, 1.0]])  # sim(a, n) = 0, then 1/sqrt(2)
    out = cosine_triplet_loss(a, p, n, margin=0.5)
    # [0.5 + 0 - 1]_+ = 0 ; [0.5 + 0.7071 - 0]_+ = 1.2071 ; mean 0.6036
    assert out["loss"].item() == pytest.approx((0.5 + 1 / math.sqrt(2)) / 2, abs=1e-6)
    assert out["sim_pos"].item() == pytest.approx(0.5)
    assert out["sim_neg"].item() == pytest.approx(1 / math.sqrt(2) / 2)
    assert out["active"].item() == 0.5


def test_cosine_loss_pulls_positive_closer():
    """The intended sign: a gradient step raises sim(a, p) and lowers sim(a, n)."""
    a = torch.tensor([[1.0, 0.2]], requires_grad=True)
    p, n = torch.tensor([[0.0, 1.0]]), torch.tensor([[1.0, 0.0]])
    before = cosine_triplet_loss(a, p, n, margin=0.5)
    before["loss"].backward()
    with torch.no_grad():
        after = cosine_triplet_loss(a - 0.1 * a.grad, p, n, margin=0.5)
    assert after["sim_pos"] > before["sim_pos"] and after["sim_neg"] < before["sim_neg"]


def test_euclidean_margin_ranking_loss_by_hand():
    a = torch.zeros(2, 2)
    p = torch.tensor([[3.0, 4.0], [6.0, 8.0]])  # d(a, p) = 5, then 10
    n = torch.tensor([[6.0, 8.0], [3.0, 4.0]])  # d(a, n) = 10, then 5
    out = euclidean_margin_ranking_loss(a, p, n, margin=5.0)
    # [5 + 5 - 10]_+ = 0 ; [5 + 10 - 5]_+ = 10 ; mean 5
    assert out["loss"].item() == pytest.approx(5.0, abs=1e-4)
    assert out["d_pos"].item() == pytest.approx(7.5, abs=1e-4)
    ref = torch.nn.MarginRankingLoss(margin=5.0)(torch.tensor([10.0, 5.0]), torch.tensor([5.0, 10.0]),
                                                 torch.ones(2))
    assert out["loss"].item() == pytest.approx(ref.item(), abs=1e-4)


def test_loss_shape_errors():
    with pytest.raises(ValueError, match=r"\(B, d\)"):
        cosine_triplet_loss(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(3, 3))
    with pytest.raises(ValueError, match="loss must be"):
        TripletObjective("hinge")
    assert TripletObjective("cosine").margin == 0.5 and TripletObjective().margin == 5.0


# -- the image store ----------------------------------------------------------------------


def write_png(path, colour, size=20, seed=0):
    rng = np.random.default_rng(seed)
    arr = np.clip(np.array(colour)[None, None, :] + rng.normal(0, 20, (size, size, 3)), 0, 255)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr.astype(np.uint8)).save(path)
    return path


@pytest.fixture()
def pairs(tmp_path):
    """Region b has three images given out of order; region c has one."""
    out = []
    for i, rid in enumerate(["a", "b", "c", "b", "b"]):
        out.append((rid, write_png(tmp_path / f"img{i}.png", (40 * i, 100, 200), size=12 + i, seed=i)))
    return out


def test_store_groups_regions_and_resizes(pairs):
    store = ImageStore.from_pairs(pairs, size=16, kind="streetview")
    assert store.images.shape == (5, 3, 16, 16) and store.images.dtype == torch.uint8
    assert store.region_ids == ["a", "b", "c"]
    assert store.index == {"a": [0], "b": [1, 2, 3], "c": [4]}
    assert store.paths[2].endswith("img3.png")
    expected = np.asarray(Image.open(pairs[3][1]).convert("RGB").resize((16, 16), Image.BILINEAR))
    assert np.array_equal(store.images[2].permute(1, 2, 0).numpy(), expected)
    rows = store.sample_rows(torch.tensor([1] * 200), torch.Generator().manual_seed(0))
    assert set(rows.tolist()) == {1, 2, 3}
    with pytest.raises(KeyError, match="no streetview image"):
        store.positions(["a", "zz"])


def test_store_cache(pairs, tmp_path):
    cache = tmp_path / "cache" / "sv.pt"
    first = ImageStore.from_pairs(pairs, size=16, cache=cache)
    assert cache.exists()
    torch.load(cache, weights_only=True)
    again = ImageStore.from_pairs(pairs, size=16, cache=cache)
    assert torch.equal(first.images, again.images) and again.region_ids == first.region_ids
    write_png(pairs[0][1], (0, 0, 0), size=12, seed=99)  # an image changed: the cache is rebuilt
    changed = ImageStore.from_pairs(pairs, size=16, cache=cache)
    assert not torch.equal(changed.images[0], first.images[0])
    bigger = ImageStore.from_pairs(pairs, size=24, cache=cache)
    assert bigger.size == 24


def test_store_cache_with_a_flipped_byte_is_named_and_rebuilt(pairs, tmp_path):
    import musecl.encoders.image as image_module

    cache = tmp_path / "cache" / "sv.pt"
    fresh = ImageStore.from_pairs(pairs, size=16, cache=cache)
    assert (tmp_path / "cache" / "sv.pt.sha256").exists()
    raw = bytearray(cache.read_bytes())
    i = raw.index(bytes(fresh.images[2, 1, 5].tolist()))  # a pixel row: the file still loads, with other pixels
    raw[i] ^= 0x10
    cache.write_bytes(bytes(raw))
    image_module._CHECKED_CACHES.clear()  # a new process
    with pytest.warns(UserWarning, match=r"image cache .*sv\.pt .*file .*sv\.pt changed \(hash mismatch"):
        rebuilt = ImageStore.from_pairs(pairs, size=16, cache=cache)
    assert torch.equal(rebuilt.images, fresh.images) and rebuilt.region_ids == fresh.region_ids
    assert torch.equal(ImageStore.from_pairs(pairs, size=16, cache=cache).images, fresh.images)  # now sound

    (tmp_path / "cache" / "sv.pt.sha256").unlink()  # a cache written by an older musecl: no hash
    image_module._CHECKED_CACHES.clear()
    with pytest.warns(UserWarning, match="no content hash"):
        again = ImageStore.from_pairs(pairs, size=16, cache=cache)
    assert torch.equal(again.images, fresh.images) and (tmp_path / "cache" / "sv.pt.sha256").exists()


def test_store_bad_image(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    with pytest.raises(ValueError, match="bad.png"):
        ImageStore.from_pairs([("a", bad)], size=16)
    with pytest.raises(FileNotFoundError, match="nothere.png"):
        ImageStore.from_pairs([("a", tmp_path / "nothere.png")], size=16)


def hexagon_wkt(lon, lat, r=0.004):
    pts = [(lon + r * math.cos(t), lat + r * math.sin(t)) for t in np.deg2rad(np.arange(0, 360, 60))]
    pts.append(pts[0])
    return "POLYGON ((" + ", ".join(f"{x:.6f} {y:.6f}" for x, y in pts) + "))"


def test_store_from_city(tmp_path):
    root = tmp_path / "city"
    ids = ["r0", "r1", "r2"]
    rows = []
    for i, rid in enumerate(ids):
        rows.append((rid, "satellite", str(write_png(root / f"sat/{rid}.png", (50 * i, 0, 0)).relative_to(root))))
        for k in range(i):  # r0 has no street view, r2 has two
            rows.append((rid, "streetview",
                         str(write_png(root / f"sv/{rid}_{k}.png", (0, 50 * k, 0)).relative_to(root))))
    regions = pd.DataFrame({"lon": [0.0, 0.01, 0.02], "lat": [0.0] * 3,
                            "geometry": [hexagon_wkt(x, 0.0) for x in (0.0, 0.01, 0.02)]}, index=ids)
    meta = CityMeta(name="t", crs="EPSG:4326", modalities=("satellite", "streetview"),
                    indicators={"PD": Indicator("PD", "population")})
    write_city(root, meta, regions, pd.DataFrame({"PD": [1.0, 2.0, 3.0]}, index=ids),
               images=pd.DataFrame(rows, columns=["region_id", "kind", "path"]))
    city = load_city(root)
    sat = ImageStore.from_city(city, "satellite", size=16)
    sv = ImageStore.from_city(city, "streetview", size=16)
    assert sat.region_ids == ids and len(sat) == 3
    assert sv.region_ids == ["r1", "r2"] and len(sv) == 3
    emb = embed_regions(build_encoder("tiny", seed=0), sv, region_ids=city.region_ids)
    assert list(emb.index) == ids and emb.loc["r0"].isna().all() and emb.loc["r2"].notna().all()
    assert emb.columns[0] == "sv_0"
    with pytest.raises(ValueError, match="kind"):
        ImageStore.from_city(city, "poi", size=16)


def test_augment_images():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (16, 3, 8, 8), dtype=torch.uint8, generator=g)
    x0 = x.clone()
    rot = augment_images(x, "rot90", torch.Generator().manual_seed(1))
    assert torch.equal(x, x0)  # input untouched
    for i in range(len(x)):
        assert any(torch.equal(rot[i], torch.rot90(x[i], k, dims=(1, 2))) for k in range(4))
    assert not torch.equal(rot, x)
    assert torch.equal(rot, augment_images(x, "rot90", torch.Generator().manual_seed(1)))
    flip = augment_images(x, "hflip", torch.Generator().manual_seed(1))
    assert all(torch.equal(flip[i], x[i]) or torch.equal(flip[i], x[i].flip(2)) for i in range(len(x)))
    assert torch.equal(augment_images(x, "none"), x)
    for batch in (x, x[:0]):  # an unknown mode fails on an empty batch too, naming the choices
        with pytest.raises(ValueError, match=r"augment must be one of \['none', 'rot90', 'hflip'\]; got 'jitter'"):
            augment_images(batch, "jitter")


# -- the triplet data set ----------------------------------------------------------------


def toy_store(n=40, size=32, seed=0):
    """n regions, one image each: two clearly distinct patterns (reddish / bluish with noise)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 2
    base = torch.where(labels[:, None] == 0, torch.tensor([200.0, 40.0, 40.0]), torch.tensor([40.0, 40.0, 200.0]))
    imgs = base[:, :, None, None] + 40 * torch.randn(n, 3, size, size, generator=g)
    store = ImageStore(imgs.clamp(0, 255).to(torch.uint8), [f"r{i}" for i in range(n)], [1] * n, kind="satellite")
    return store, labels.numpy()


def toy_triplets(labels, n_triplets=200, seed=0):
    rng = np.random.default_rng(seed)
    same = {c: np.flatnonzero(labels == c) for c in (0, 1)}
    a = rng.integers(0, len(labels), n_triplets)
    p = np.array([rng.choice(same[labels[i]][same[labels[i]] != i]) for i in a])
    n = np.array([rng.choice(same[1 - labels[i]]) for i in a])
    return a, p, n


def test_triplet_dataset_batches():
    store, labels = toy_store(8, size=16)
    a, p, n = toy_triplets(labels, 10)
    data = TripletImageDataset(store, (a, p, n))
    assert len(data) == 10 and data.augment == "rot90"
    batch = data.get_batch(torch.tensor([0, 3, 5]), torch.Generator().manual_seed(0))
    assert batch.shape == (9, 3, 16, 16) and batch.dtype == torch.uint8
    same = TripletImageDataset(store, (a, p, n), augment="none").get_batch(torch.tensor([3]))
    assert torch.equal(same[0], store.images[a[3]]) and torch.equal(same[2], store.images[n[3]])
    # by region ids, by a sampling.Triplets (indices mapped through its ids), and bad input
    ids = np.array(store.region_ids)
    by_id = TripletImageDataset(store, pd.DataFrame({"anchor": ids[a], "positive": ids[p], "negative": ids[n]}))
    assert torch.equal(by_id.roles, data.roles)
    reversed_ids = ids[::-1].copy()
    t = Triplets(anchor=len(ids) - 1 - a, positive=len(ids) - 1 - p, negative=len(ids) - 1 - n,
                 d_pos=np.zeros(10), d_neg=np.zeros(10), region_ids=reversed_ids)
    assert torch.equal(TripletImageDataset(store, t).roles, data.roles)
    with pytest.raises(KeyError, match="no satellite image"):
        TripletImageDataset(store, (["r0"], ["r1"], ["nowhere"]))
    with pytest.raises(IndexError, match="positions"):
        TripletImageDataset(store, ([0], [1], [99]))
    assert len(data.subset([1, 2])) == 2


# -- encoders -----------------------------------------------------------------------------


def test_build_encoders_and_seed():
    x = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    a, b = build_encoder("resnet18", seed=1).eval(), build_encoder("resnet18", seed=1).eval()
    assert torch.equal(a(x), b(x)) and a(x).shape == (2, 128)
    assert a.config["weights_source"] == "random" and a.net.fc.in_features == 512
    tiny = build_encoder("tiny", embedding_dim=16, channels_last=True, seed=0)
    assert tiny(x).shape == (2, 16)
    with pytest.raises(ValueError, match="unknown arch"):
        build_encoder("vgg")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        build_encoder("tiny", weights="no/such/file.pt")


def test_inception_small_input():
    enc = build_encoder("inception_v3", seed=0).eval()
    assert enc.net.fc.in_features == 2048 and enc.config["min_size"] == 75
    with torch.no_grad():
        assert enc(torch.zeros(1, 3, 64, 64, dtype=torch.uint8)).shape == (1, 128)


def test_imagenet_weights_only_from_local_cache(tmp_path, monkeypatch):
    import torchvision

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(FileNotFoundError, match=r"resnet18-f37072fd\.pth.*never downloads"):
        build_encoder("resnet18", weights="imagenet")
    with pytest.raises(ValueError, match="no ImageNet weights"):
        build_encoder("tiny", weights="imagenet")
    # a file in the cache is used as is (a seeded stand-in for the real ImageNet file)
    torch.manual_seed(0)
    fake = torchvision.models.resnet18(weights=None).state_dict()
    path = imagenet_weights_file("resnet18")
    path.parent.mkdir(parents=True)
    torch.save(fake, path)
    enc = build_encoder("resnet18", weights="imagenet")
    assert enc.config["weights_source"] == "imagenet:resnet18-f37072fd.pth"
    assert torch.equal(enc.net.conv1.weight, fake["conv1.weight"])
    # the same file given as a path: a raw state dict whose 1000-class fc is skipped
    raw = build_encoder("resnet18", weights=path)
    assert raw.config["weights_source"] == f"checkpoint:{path}"
    assert torch.equal(raw.net.layer4[1].bn2.running_var, fake["layer4.1.bn2.running_var"])
    assert raw.net.fc.out_features == 128


def test_save_load_round_trip(tmp_path):
    store, _ = toy_store(6, size=32)
    enc = build_encoder("tiny", seed=0)
    enc.training_config = {"epochs": 3}
    save_encoder(enc, tmp_path / "enc")
    config = json.loads((tmp_path / "enc" / "config.json").read_text())
    assert config["arch"] == "tiny" and config["embedding_dim"] == 128 and config["training"] == {"epochs": 3}
    back = load_encoder(tmp_path / "enc")
    pd.testing.assert_frame_equal(embed_regions(enc, store), embed_regions(back, store))
    from_path = build_encoder("tiny", weights=tmp_path / "enc")
    pd.testing.assert_frame_equal(embed_regions(enc, store), embed_regions(from_path, store))
    with pytest.raises(FileNotFoundError, match="save_encoder"):
        load_encoder(tmp_path)


def test_embed_regions_averages_street_views():
    g = torch.Generator().manual_seed(0)
    imgs = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8, generator=g)
    store = ImageStore(imgs, ["a", "b", "c"], [1, 3, 2], kind="streetview")
    enc = build_encoder("resnet18", seed=0)
    emb = embed_regions(enc, store, batch_size=4)
    assert emb.shape == (3, 128) and list(emb.index) == ["a", "b", "c"] and emb.index.name == "region_id"
    with torch.no_grad():
        each = enc.eval()(imgs)
    assert np.allclose(emb.loc["b"].to_numpy(), each[1:4].mean(0).numpy(), atol=1e-5)
    assert np.allclose(emb.loc["c"].to_numpy(), each[4:6].mean(0).numpy(), atol=1e-5)
    full = embed_regions(enc, store, region_ids=["a", "b", "c", "d"])
    assert full.loc["d"].isna().all() and full.shape == (4, 128)


# -- training ----------------------------------------------------------------------------


def test_training_separates_two_patterns(tmp_path):
    store, labels = toy_store(40, size=32)
    triplets = toy_triplets(labels, 200)
    enc = build_encoder("tiny", seed=0)
    cfg = {"loss": "cosine", "epochs": 4, "batch_size": 16, "lr": 1e-3, "progress": False,
           "checkpoint_dir": str(tmp_path / "ckpt")}
    enc, hist = train_image_encoder(enc, store, triplets, cfg)
    assert hist["train_loss"].iloc[-1] < hist["train_loss"].iloc[0]
    assert hist["val_sim_pos"].iloc[-1] > hist["val_sim_neg"].iloc[-1]
    assert enc.training_config["loss"] == "cosine" and enc.training_config["margin"] == 0.5
    assert (tmp_path / "ckpt" / "last.pt").exists()
    emb = embed_regions(enc, store).to_numpy()
    centroid = [emb[labels == c].mean(0) for c in (0, 1)]
    cos = emb @ np.stack(centroid).T / np.linalg.norm(emb, axis=1, keepdims=True) / np.linalg.norm(centroid, axis=1)
    assert (cos.argmax(1) == labels).mean() > 0.9


def test_training_is_deterministic():
    store, labels = toy_store(12, size=32)
    triplets = toy_triplets(labels, 24)
    cfg = {"epochs": 2, "batch_size": 8, "progress": False, "seed": 5}
    a, ha = train_image_encoder(build_encoder("tiny", seed=0), store, triplets, cfg)
    b, hb = train_image_encoder(build_encoder("tiny", seed=0), store, triplets, cfg)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    assert ha["train_loss"].tolist() == hb["train_loss"].tolist()


def test_resnet18_trains_on_small_images():
    store, labels = toy_store(8, size=32)
    enc, hist = train_image_encoder(build_encoder("resnet18", seed=0), store, toy_triplets(labels, 8),
                                    {"epochs": 1, "batch_size": 4, "progress": False, "val_fraction": 0.0})
    assert len(hist) == 1 and np.isfinite(hist["train_loss"]).all() and "val_loss" not in hist
    assert enc.training_config["n_triplets"] == 8 and not enc.training
    with pytest.raises(ValueError, match="unknown training setting"):
        train_image_encoder(enc, store, toy_triplets(labels, 8), {"epoch": 1})


def test_on_the_cpu_training_leaves_the_store_where_it_is():
    from musecl.encoders.image import ImageStore, ImageTrainingConfig, _store_for_training

    store = ImageStore(torch.zeros((2, 3, 8, 8), dtype=torch.uint8), ["a", "b"], [1, 1])
    assert _store_for_training(store, ImageTrainingConfig(device="cpu")) is store
    assert _store_for_training(store, ImageTrainingConfig(device="cpu", store_on_device=True)) is store


def test_images_decode_upright_as_their_exif_says(tmp_path):
    """A phone's JPEG often keeps its pixels sideways and the rotation in EXIF (Orientation 6):
    decoded as viewers show it, not as stored (a review found them fed to the encoders sideways)."""
    from musecl.encoders.image import _decode

    pixels = np.zeros((8, 16, 3), np.uint8)
    pixels[:, 8:] = 255
    pixels[:4, :, 0] = 200
    stored = Image.fromarray(pixels)
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to view
    stored.save(tmp_path / "tagged.png", exif=exif)
    stored.transpose(Image.Transpose.ROTATE_270).save(tmp_path / "upright.png")
    stored.save(tmp_path / "untagged.png")
    upright = _decode(tmp_path / "upright.png", 8)
    assert np.array_equal(_decode(tmp_path / "tagged.png", 8), upright)
    assert not np.array_equal(_decode(tmp_path / "untagged.png", 8), upright)
