"""Triplet heads on frozen features (arch "lite0-head"): they learn the pairing, keep missing
regions missing, save and load exactly, and plug into MuseCL's image stage."""
from __future__ import annotations

import dataclasses
import json
import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from musecl.cache import Cache, load_table
from musecl.city import SATELLITE, STREETVIEW, load_city
from musecl.config import ConfigError, RunConfig
from musecl.datasets.toy import make_toy_city
from musecl.encoders.heads import (
    efficientnet_lite0,
    embed_features,
    load_head,
    pooled_features_module,
    save_head,
    train_feature_head,
)
from musecl.encoders.image import COLUMN_PREFIX, ImageTrainingConfig, train_image_encoder
from musecl.methods.multisemantic import (
    backbone_features,
    city_image_store,
    image_stage,
    initial_embedding,
    stage_encoder,
)


def clustered(n_per=30, groups=4, dim=12, seed=0):
    """Regions in ``groups`` clusters whose signal lives in the first two of ``dim`` noisy features."""
    rng = np.random.default_rng(seed)
    label = np.repeat(np.arange(groups), n_per)
    centre = rng.normal(0, 3, (groups, 2))
    x = np.hstack([centre[label] + rng.normal(0, 0.5, (len(label), 2)), rng.normal(0, 2, (len(label), dim - 2))])
    ids = [f"r{i}" for i in range(len(label))]
    return pd.DataFrame(x, index=ids), pd.Series(label, index=ids)


def triplets_from(label: pd.Series, n=600, seed=0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    ids = label.index.to_numpy()
    rows = []
    while len(rows) < n:
        a, p, q = rng.choice(len(ids), 3, replace=False)
        if label.iloc[a] == label.iloc[p] and label.iloc[a] != label.iloc[q]:
            rows.append((ids[a], ids[p], ids[q]))
    return pd.DataFrame(rows, columns=["anchor", "positive", "negative"])


CFG = ImageTrainingConfig(loss="cosine", epochs=15, batch_size=32, lr=2e-3, val_fraction=0.2, progress=False)


def test_head_learns_the_pairing_and_keeps_missing_rows_missing(tmp_path):
    x, label = clustered()
    head, history = train_feature_head(x, triplets_from(label), CFG, embedding_dim=8, hidden=16)
    assert history["val_sim_pos"].iloc[-1] - history["val_sim_neg"].iloc[-1] > 0.5  # held-out triplets
    assert history["val_loss"].iloc[-1] < history["val_loss"].iloc[0]
    with_gap = x.copy()
    with_gap.iloc[3] = np.nan
    emb = embed_features(head, with_gap, prefix="rs")
    assert list(emb.columns[:2]) == ["rs_0", "rs_1"] and emb.shape == (len(x), 8)  # named as a CNN's
    assert emb.iloc[3].isna().all() and emb.drop(index=x.index[3]).notna().all().all()
    save_head(head, tmp_path / "head", {"arch": "lite0-head", "weights_source": "test"})
    again = load_head(tmp_path / "head")
    np.testing.assert_array_equal(embed_features(again, x).to_numpy(), embed_features(head, x).to_numpy())
    assert json.loads((tmp_path / "head" / "config.json").read_text())["arch"] == "lite0-head"


def _recovered(emb: pd.DataFrame, column: pd.Series) -> float:
    """In-sample R2 of a least-squares read-out of ``column`` from the embedding."""
    design = np.hstack([emb.to_numpy(), np.ones((len(emb), 1))])
    fit = design @ np.linalg.lstsq(design, column.to_numpy(), rcond=None)[0]
    return 1 - ((column - fit) ** 2).sum() / ((column - column.mean()) ** 2).sum()


def test_reconstruction_keeps_what_the_triplets_do_not_ask_for(tmp_path):
    x, label = clustered(n_per=40)
    triplets = triplets_from(label)
    plain, _ = train_feature_head(x, triplets, CFG, embedding_dim=8, hidden=16)
    kept, history = train_feature_head(x, triplets, dataclasses.replace(CFG, reconstruction=1.0),
                                       embedding_dim=8, hidden=16)
    assert {"train_triplet", "train_reconstruction", "val_reconstruction"} <= set(history.columns)
    assert history["val_sim_pos"].iloc[-1] - history["val_sim_neg"].iloc[-1] > 0.5  # still learns the pairing
    noise = list(x.columns[2:])  # features the cluster triplets say nothing about
    r2_plain = np.mean([_recovered(embed_features(plain, x), x[c]) for c in noise])
    r2_kept = np.mean([_recovered(embed_features(kept, x), x[c]) for c in noise])
    assert r2_kept > r2_plain + 0.15, (r2_plain, r2_kept)  # 0.25 -> 0.45 when written
    save_head(kept, tmp_path / "head", {"arch": "lite0-head", "weights_source": "test"})
    again = load_head(tmp_path / "head")
    assert again.decoder is not None
    np.testing.assert_array_equal(embed_features(again, x).to_numpy(), embed_features(kept, x).to_numpy())


def test_reconstruction_is_refused_where_there_is_no_decoder():
    with pytest.raises(ConfigError, match="head_reconstruction") as err:
        RunConfig.from_dict({"head_reconstruction": 1.0, "rs_arch": "tiny", "sv_arch": "tiny"})
    assert err.value.key == "head_reconstruction"
    with pytest.raises(ValueError, match="no decoder"):
        train_image_encoder(None, None, [], ImageTrainingConfig(reconstruction=1.0))


def test_head_rejects_triplets_without_features():
    x, label = clustered(n_per=5)
    bad = triplets_from(label, n=10)
    bad.loc[0, "anchor"] = "nowhere"
    with pytest.raises(ValueError, match="no complete feature row"):
        train_feature_head(x, bad, CFG)


@pytest.fixture(scope="module")
def city(tmp_path_factory):
    root = make_toy_city(tmp_path_factory.mktemp("toy") / "city", n_regions=40, seed=1, image_size=32,
                         progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_city(root)


def test_image_stage_trains_a_head_per_seed(city, tmp_path):
    pytest.importorskip("efficientnet_lite_pytorch")
    cache = Cache(tmp_path / "cache")
    settings = dict(n_triplets=60, rs_arch="lite0-head", sv_arch="lite0-head", rs_image_size=32,
                    sv_image_size=32, rs_epochs=3, sv_epochs=3, rs_batch_size=16, sv_batch_size=16)
    tables = {}
    for seed in (0, 1):
        for kind in (SATELLITE, STREETVIEW):
            stage = image_stage(city, RunConfig(seed=seed, **settings), kind, cache, progress=False)
            table = load_table(stage / "embeddings.csv")
            assert list(table.index) == list(city.region_ids) and table.shape[1] == 128
            has_image = set(city.satellite_paths().index if kind == SATELLITE else city.streetview_paths())
            assert table.loc[[r for r in city.region_ids if r in has_image]].notna().all().all()
            config = json.loads((stage / "encoder" / "config.json").read_text())
            assert config["arch"] == "lite0-head" and config["weights_source"].startswith("imagenet:")
            tables[seed, kind] = table
    again = load_table(image_stage(city, RunConfig(seed=0, **settings), SATELLITE, cache, progress=False)
                       / "embeddings.csv")
    pd.testing.assert_frame_equal(again, tables[0, SATELLITE])  # cached
    assert not np.allclose(tables[0, SATELLITE].fillna(0), tables[1, SATELLITE].fillna(0))  # a seed retrains


def test_new_backbone_features_retrain_the_head(city, tmp_path, monkeypatch):
    """A head is keyed by the format of the features it reads, so a change of the backbone's
    feature extraction (FEATURES_FORMAT) cannot leave a head trained on the old ones in use."""
    pytest.importorskip("efficientnet_lite_pytorch")
    from musecl.methods import multisemantic

    cache = Cache(tmp_path / "cache")
    cfg = RunConfig(n_triplets=60, rs_arch="lite0-head", rs_image_size=32, rs_epochs=2, rs_batch_size=16)
    before = image_stage(city, cfg, SATELLITE, cache, progress=False)
    assert image_stage(city, cfg, SATELLITE, cache, progress=False) == before
    monkeypatch.setattr(multisemantic, "FEATURES_FORMAT", multisemantic.FEATURES_FORMAT + 1)
    after = image_stage(city, cfg, SATELLITE, cache, progress=False)
    assert after != before and (after / "embeddings.csv").is_file()


def test_a_head_on_the_backbone_stages(city, tmp_path):
    """backbone_layers "stages": the head reads the means of the stem's and each stage's output
    (816 numbers for Lite0, each as a forward hook sees it), is cached apart from a head on the
    last layer, and its stage encoder gives the stage's own rows from the images."""
    pytest.importorskip("efficientnet_lite_pytorch")
    cache = Cache(tmp_path / "cache")
    cfg = RunConfig(n_triplets=60, rs_arch="lite0-head", rs_image_size=32, rs_epochs=2, rs_batch_size=16,
                    backbone_layers="stages")
    stage = image_stage(city, cfg, SATELLITE, cache, progress=False)
    last = cfg.replace(backbone_layers="last")
    assert image_stage(city, last, SATELLITE, cache, progress=False) != stage
    features = backbone_features(city, cfg, SATELLITE, cache)
    assert features.shape[1] == 816 and backbone_features(city, last, SATELLITE, cache).shape[1] == 1280
    net, _ = efficientnet_lite0(32)
    seen = []
    for block in (net._blocks[0], net._blocks[15]):  # the first stage's only block, the last stage's
        block.register_forward_hook(lambda module, args, out: seen.append(out.mean(dim=(2, 3))))
    store = city_image_store(city, SATELLITE, 32, cache, progress=False)
    with torch.no_grad():
        pooled = pooled_features_module(net, 32, "stages")(store.images[:3])
    torch.testing.assert_close(pooled[:, 32:48], seen[0])  # after the stem's 32
    torch.testing.assert_close(pooled[:, -320:], seen[1])
    first = list(store.region_ids[:3])  # one satellite image per region: its features are the row
    np.testing.assert_allclose(features.loc[first].to_numpy(), pooled.numpy(), rtol=1e-4, atol=1e-4)  # batches of 32
    with torch.no_grad():
        rows = stage_encoder(stage)(store.images[:3]).numpy()
    np.testing.assert_allclose(rows, load_table(stage / "embeddings.csv").loc[first].to_numpy(), rtol=1e-4, atol=1e-4)


def test_a_head_stage_as_one_encoder_and_its_untrained_start(city, tmp_path):
    """stage_encoder on a satellite image (one per region) gives the stage's own row; the untrained
    start (same seed, same standardisation) gives other vectors."""
    pytest.importorskip("efficientnet_lite_pytorch")
    cache = Cache(tmp_path / "cache")
    cfg = RunConfig(n_triplets=60, rs_arch="lite0-head", rs_image_size=32, rs_epochs=3, rs_batch_size=16)
    stage = image_stage(city, cfg, SATELLITE, cache, progress=False)
    trained = load_table(stage / "embeddings.csv")
    store = city_image_store(city, SATELLITE, 32, cache, progress=False)
    encoder = stage_encoder(stage)
    assert encoder.config["arch"] == "lite0-head" and encoder.embedding_dim == 128
    with torch.no_grad():
        rows = encoder(store.images[:5]).numpy()
    np.testing.assert_allclose(rows, trained.loc[list(store.region_ids[:5])].to_numpy(), atol=1e-4)
    start = initial_embedding(city, cfg, SATELLITE, cache, stage)
    assert list(start.columns) == list(trained.columns) and list(start.index) == list(trained.index)
    assert start.isna().equals(trained.isna()) and not np.allclose(start.fillna(0), trained.fillna(0))
    with torch.no_grad():
        again = stage_encoder(stage, initial=True, seed=cfg.seed)(store.images[:5]).numpy()
    np.testing.assert_allclose(again, start.loc[list(store.region_ids[:5])].to_numpy(), atol=1e-4)


def test_muse_cl_with_fine_tuned_heads(city, tmp_path):
    """The variant's fusion stage trains the heads on: its fused vectors and its heads differ from
    MuseCL's on the same stages, every region gets one, and it saves and loads like MuseCL."""
    pytest.importorskip("efficientnet_lite_pytorch")
    from musecl.methods import make_method

    cfg = RunConfig(n_triplets=60, rs_arch="lite0-head", sv_arch="lite0-head", rs_image_size=32,
                    sv_image_size=32, rs_epochs=3, sv_epochs=3, rs_batch_size=16, sv_batch_size=16,
                    fusion_epochs=3, fusion_batch_size=16)
    plain = make_method("MuseCL", cfg, tmp_path / "cache", progress=False).fit(city)
    tuned = make_method("MuseCL (fine-tuned heads)", cfg, tmp_path / "cache", progress=False).fit(city)
    assert tuned.stage_dirs["satellite"] == plain.stage_dirs["satellite"]  # the same triplet-trained heads
    a, b = plain.transform(city), tuned.transform(city)
    assert a.shape == b.shape and b.notna().all().all() and not np.allclose(a, b)
    fused = tuned.stage_dirs["fusion"]
    start, end = load_head(plain.stage_dirs["satellite"] / "encoder"), load_head(fused / "encoder-rs")
    assert not torch.equal(start.net[0].weight, end.net[0].weight)
    for stage, prefix in (("satellite", "rs"), ("streetview", "sv")):  # the heads after fine-tuning
        table = tuned.stage_table(stage)
        assert list(table.index) == list(plain.stage_table(stage).index)
        assert not np.allclose(table.fillna(0), plain.stage_table(stage).fillna(0))
        assert table.isna().equals(plain.stage_table(stage).isna())
    features = backbone_features(city, cfg, STREETVIEW, tuned.cache).reindex(city.region_ids)
    again = embed_features(load_head(fused / "encoder-sv"), features, prefix=COLUMN_PREFIX[STREETVIEW])
    pd.testing.assert_frame_equal(again, table, check_dtype=False, atol=1e-6)  # the table: float64
    tuned.save(tmp_path / "saved")
    back = type(tuned).load(tmp_path / "saved")
    pd.testing.assert_frame_equal(back.transform(city), b)
    pd.testing.assert_frame_equal(back.stage_table("satellite"), tuned.stage_table("satellite"))
    cnn = cfg.replace(sv_arch="resnet18")
    with pytest.raises(ValueError, match="sv_arch"):
        make_method("MuseCL (fine-tuned heads)", cnn, tmp_path / "cache", progress=False).fit(city)
