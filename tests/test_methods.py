"""MuseCL end to end on a tiny toy city: shapes, determinism, cache hits, save/load, `musecl run`."""
from __future__ import annotations

import json
import subprocess
import sys
import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from musecl.city import load_city
from musecl.config import RunConfig
from musecl.datasets.toy import GENERATOR_VERSION, make_toy_city
from musecl.evaluation import CEILING_METHODS, RESULT_COLUMNS
from musecl.fusion import fuse
from musecl.methods import METHODS, MuseCL, make_method

TINY = RunConfig(n_triplets=60, rs_arch="tiny", sv_arch="tiny", rs_image_size=32, sv_image_size=32,
                 rs_epochs=1, sv_epochs=1, embedding_dim=16, text_epochs=1, fusion_epochs=3,
                 seeds=(0,), splits=("random", "spatial"), probe_max_epochs=10, probe_patience=3)


@pytest.fixture(scope="module")
def city(tmp_path_factory):
    root = make_toy_city(tmp_path_factory.mktemp("toy") / "city", n_regions=40, seed=1, image_size=32,
                         progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_city(root)


def fit(city, cache_dir) -> MuseCL:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tiny city: regions without POIs or images are expected
        return MuseCL(TINY, cache_dir=cache_dir, progress=False).fit(city)


def test_registry_and_unknown_method():
    assert "MuseCL" in METHODS
    with pytest.raises(ValueError, match="unknown method 'Nope'"):
        make_method("Nope")


def test_a_path_where_an_object_belongs_is_named_at_once(city):
    with pytest.raises(TypeError, match=r"RunConfig.from_yaml\(path\) reads a params file"):
        make_method("MuseCL", "params/smoke.yaml")
    with pytest.raises(TypeError, match="city must be a City"):
        make_method("Location kNN", progress=False).fit(str(city.root))


def test_musecl_embedding_shape_and_attention(city, tmp_path):
    method = fit(city, tmp_path / "cache")
    emb = method.transform(city)
    assert list(emb.index) == list(city.region_ids)
    assert emb.shape == (len(city), TINY.embedding_dim) and np.isfinite(emb.to_numpy()).all()
    beta = method.attention()
    assert list(beta.columns) == ["sv", "rs"]
    assert np.allclose(beta.sum(axis=1), 1.0)  # eq. 9: a softmax over the two modalities
    # the fusion read back from its stage is the one that made the embedding (chapter 6 reads it)
    again, beta_again = fuse(method.fusion_model(), method.stage_table("streetview"), method.stage_table("satellite"))
    np.testing.assert_allclose(again.to_numpy(), method.stage_table("fusion").to_numpy(), atol=1e-6)
    np.testing.assert_allclose(beta_again.to_numpy(), beta.to_numpy(), atol=1e-6)


def test_deterministic_for_a_seed(city, tmp_path):
    a = fit(city, tmp_path / "a").transform(city)
    b = fit(city, tmp_path / "b").transform(city)
    pd.testing.assert_frame_equal(a, b)


def test_cache_hit_does_not_retrain(city, tmp_path, monkeypatch):
    first = fit(city, tmp_path / "cache").transform(city)

    def boom(*args, **kwargs):
        raise AssertionError("a cached stage was recomputed")

    # where the stages look them up
    monkeypatch.setattr("musecl.methods.multisemantic.train_image_encoder", boom)
    monkeypatch.setattr("musecl.methods.multisemantic.train_fusion", boom)
    second = fit(city, tmp_path / "cache").transform(city)
    pd.testing.assert_frame_equal(first, second)
    with pytest.raises(AssertionError, match="recomputed"):  # the stand-ins are the ones a miss calls
        fit(city, tmp_path / "empty")


def test_changed_setting_misses_the_cache(city, tmp_path):
    fit(city, tmp_path / "cache")
    changed = RunConfig(**{**TINY.to_dict(), "fusion_epochs": 4})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        MuseCL(changed, cache_dir=tmp_path / "cache", progress=False).fit(city)
    assert len(list((tmp_path / "cache" / "fusion").glob("[!.]*"))) == 2
    assert len(list((tmp_path / "cache" / "encoder-satellite").glob("[!.]*"))) == 1  # upstream reused


def test_save_load_round_trip(city, tmp_path):
    method = fit(city, tmp_path / "cache")
    method.save(tmp_path / "saved")
    loaded = MuseCL.load(tmp_path / "saved")
    pd.testing.assert_frame_equal(method.transform(city), loaded.transform(city))
    assert loaded.config == TINY
    loaded.save(tmp_path / "saved")  # again where it was loaded from: nothing to copy, nothing lost
    pd.testing.assert_frame_equal(MuseCL.load(tmp_path / "saved").transform(city), method.transform(city))
    with pytest.raises(ValueError, match=r"no stage 'fusoin'; it has \['fusion', 'satellite'"):
        loaded.history("fusoin")
    # saved again into the same folder after a fit on a city with satellite images alone: the
    # street-view stage of the first save must not come back with it
    from musecl.city import restrict_city

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        satellite_only = load_city(restrict_city(city.root, tmp_path / "sat", ["satellite", "poi"]))
        fit(satellite_only, tmp_path / "cache").save(tmp_path / "saved")
    again = MuseCL.load(tmp_path / "saved")
    assert again.views == ("satellite",) and not (tmp_path / "saved" / "streetview").exists()


def test_a_save_cut_off_half_way_is_refused_on_load(city, tmp_path, monkeypatch):
    """A save killed while it copies stages (or writes the table) over an earlier save: ``load``
    used to read the earlier config.json with this fit's stages; now the folder has none."""
    import shutil

    method = fit(city, tmp_path / "cache")
    method.save(tmp_path / "saved")
    table = make_method("Location kNN", TINY).fit(city)
    table.save(tmp_path / "table")

    def cut_off(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(shutil, "copytree", cut_off)
    with pytest.raises(KeyboardInterrupt):
        method.save(tmp_path / "saved")
    monkeypatch.setattr("musecl.methods.base.save_table", cut_off)
    with pytest.raises(KeyboardInterrupt):
        table.save(tmp_path / "table")
    with pytest.raises(FileNotFoundError, match=r"config\.json is missing; was this folder written by MuseCL\.save"):
        MuseCL.load(tmp_path / "saved")
    with pytest.raises(FileNotFoundError, match=r"config\.json is missing"):
        type(table).load(tmp_path / "table")


def test_editing_a_label_keeps_the_trained_stages(city, tmp_path):
    """No method reads the indicators: a fit stays valid, and its stages are reused, when a label
    changes or an indicator is added; a changed input is another city."""
    import shutil

    copy = tmp_path / "city"
    shutil.copytree(city.root, copy)
    method = fit(load_city(copy), tmp_path / "cache")
    indicators = pd.read_csv(copy / "indicators.csv", dtype={"region_id": str})
    indicators.loc[0, "CR"] = indicators["CR"].max() + 1
    indicators.to_csv(copy / "indicators.csv", index=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        relabelled = load_city(copy)
    pd.testing.assert_frame_equal(method.transform(relabelled), method.transform(load_city(city.root)))
    assert fit(relabelled, tmp_path / "cache").stage_dirs == method.stage_dirs  # nothing retrained
    pois = pd.read_csv(copy / "pois.csv", dtype={"region_id": str})
    pois.iloc[1:].to_csv(copy / "pois.csv", index=False)  # one POI fewer: an input changed
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match="fitted on other data"):
            method.transform(load_city(copy))


def test_a_checkpoint_is_keyed_by_what_it_holds(city, tmp_path):
    """weights: a checkpoint path. Another file at the same path trains another encoder instead of
    reusing the stage trained from the old one; the same file elsewhere is the same stage."""
    from musecl.cache import Cache
    from musecl.city import SATELLITE
    from musecl.encoders.image import build_encoder, save_encoder
    from musecl.methods.multisemantic import image_stage

    cache = Cache(tmp_path / "cache")
    stages = []
    for seed, folder in ((0, "ckpt"), (1, "ckpt"), (1, "copy")):
        save_encoder(build_encoder("tiny", TINY.embedding_dim, seed=seed), tmp_path / folder)
        cfg = TINY.replace(weights=str(tmp_path / folder), rs_epochs=1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            stages.append(image_stage(city, cfg, SATELLITE, cache, progress=False))
    assert stages[0] != stages[1] and stages[1] == stages[2]
    # the untrained-backbone baselines read weights too
    from musecl.methods.baselines import backbone_stage

    features = []
    for seed, folder in ((0, "r1"), (0, "r2"), (2, "r1")):
        save_encoder(build_encoder("resnet18", TINY.embedding_dim, seed=seed), tmp_path / folder)
        cfg = TINY.replace(weights=str(tmp_path / folder))
        features.append(backbone_stage(city, cfg, SATELLITE, "resnet18", 32, cache, progress=False))
    assert features[0] == features[1] and features[2] != features[0]


def test_run_command_writes_results(city, tmp_path):
    params = tmp_path / "p.yaml"
    import yaml

    params.write_text(yaml.safe_dump(TINY.to_dict()))
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "musecl.cli", "run", str(city.root), "--out", str(out),
                           "--params", str(params)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = pd.read_csv(out / "results.csv")
    assert list(results.columns) == RESULT_COLUMNS
    assert set(results["split"]) == {"random", "spatial"}
    assert len(results) == len(city.meta.indicators) * 2
    for name in ("embeddings/MuseCL.csv", "attention.csv", "predictions.csv", "config.yaml", "run.json",
                 "figures/predicted_vs_true.png", "figures/attention_map.png"):
        assert (out / name).exists(), name
    info = json.loads((out / "run.json").read_text())  # the machine, down to the CPU's vector units
    assert info["cpu_capability"] == torch.backends.cpu.get_cpu_capability() and info["torch"] == torch.__version__
    # the toy city's ceilings, scored on the very test parts of the same splits and seeds
    ceilings = pd.read_csv(out / "ceilings.csv")
    assert list(ceilings.columns) == RESULT_COLUMNS
    assert set(ceilings["method"]) == set(CEILING_METHODS.values())
    assert len(ceilings) == len(CEILING_METHODS) * len(results)
    n_test = results.set_index(["indicator", "split", "seed"])["n_test"]
    for _, row in ceilings.iterrows():
        assert row["n_test"] == n_test[(row["indicator"], row["split"], row["seed"])]
    # the same regions, not only as many: each ceiling's R2 recomputed on the test part of
    # predictions.csv (seed 0, random split)
    preds = pd.read_csv(out / "predictions.csv", dtype={"region_id": str})
    targets = city.targets()
    for source, name in CEILING_METHODS.items():
        ceiling = city.ceiling_predictions(source)
        for indicator in city.meta.indicators:
            test = preds.loc[(preds["indicator"] == indicator) & (preds["split_part"] == "test"), "region_id"]
            y, p = targets.loc[test, indicator].to_numpy(), ceiling.loc[test, indicator].to_numpy()
            row = ceilings[(ceilings["method"] == name) & (ceilings["indicator"] == indicator)
                           & (ceilings["split"] == "random") & (ceilings["seed"] == 0)]
            assert row["r2"].item() == pytest.approx(1 - ((y - p) ** 2).sum() / ((y - y.mean()) ** 2).sum(), abs=1e-9)


def test_config_rejects_unknown_keys():
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['rs_epoch'\]"):
        RunConfig.from_dict({"rs_epoch": 3})


def test_evaluation_is_cached_by_embedding_values(city, tmp_path, monkeypatch):
    from musecl import runner

    calls, original = [], runner.evaluate_embedding

    def counting(embedding, city, method, **kwargs):
        calls.append(method)
        return original(embedding, city, method, **kwargs)

    monkeypatch.setattr(runner, "evaluate_embedding", counting)  # where score_embedding looks it up
    other_seed = RunConfig(**{**TINY.to_dict(), "seeds": (1,)})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        first, second, third = (runner.run(city, tmp_path / out, config, methods=["POI only"],
                                           cache_dir=tmp_path / "cache", progress=False)
                                for out, config in (("a", TINY), ("b", TINY), ("c", other_seed)))
    assert calls == ["POI only", "POI only"]  # the second run reused the scores; another seed did not
    assert (tmp_path / "a" / "ceilings.csv").exists()  # the toy city has ceilings
    pd.testing.assert_frame_equal(first, second)
    assert set(third["seed"]) == {1}
    # the key holds the embedding's values: one changed number is scored anew, an equal copy is not
    from musecl.cache import Cache, load_table

    calls.clear()
    cache = Cache(tmp_path / "cache2")
    embedding = load_table(tmp_path / "a" / "embeddings" / "POI only.csv")
    changed = embedding.copy()
    changed.iloc[0, 0] += 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scored = runner.score_embedding(embedding, city, "POI only", TINY, cache)
        again = runner.score_embedding(embedding.copy(), city, "POI only", TINY, cache)
        runner.score_embedding(changed, city, "POI only", TINY, cache)
    assert calls == ["POI only", "POI only"]
    pd.testing.assert_frame_equal(scored, again)


def test_images_in_shards_give_the_same_musecl_as_images_in_memory(city, tmp_path):
    """image_store is a storage choice, not a setting of the method: it is left out of the cache
    keys, so it must not change a single number."""

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        memory = MuseCL(TINY, cache_dir=tmp_path / "memory", progress=False).fit(city).transform(city)
        sharded_config = TINY.replace(image_store="shards")
        sharded = MuseCL(sharded_config, cache_dir=tmp_path / "shards", progress=False).fit(city).transform(city)
    assert list((tmp_path / "shards" / "images").glob("*-shards"))
    pd.testing.assert_frame_equal(memory, sharded)


def test_methods_fitted_side_by_side_equal_one_by_one(city, tmp_path, monkeypatch):
    """Two worker processes (one thread each) give the same table, embeddings and attention as
    fitting the methods in turn on one thread: the parallel path only reorders the work. SV
    only shares MuseCL's stages, which the cache computes once."""
    import json

    import torch

    from musecl import runner

    methods = ["SV only", "MuseCL", "Tile2vec-style", "POI only"]  # two that train: two workers
    monkeypatch.setattr(runner, "resolve_jobs", lambda n: 2 if n == 0 else int(n))  # 2 "cores"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            one = runner.run(city, tmp_path / "one", TINY.replace(jobs=1), methods=methods,
                             cache_dir=tmp_path / "cache-one", progress=False)
            two = runner.run(city, tmp_path / "two", TINY.replace(jobs=2), methods=methods,
                             cache_dir=tmp_path / "cache-two", progress=False)
    finally:
        torch.set_num_threads(threads)
    assert json.loads((tmp_path / "two" / "run.json").read_text())["method_workers"] == 2
    assert json.loads((tmp_path / "one" / "run.json").read_text())["method_workers"] == 1
    assert runner.method_workers(TINY.replace(jobs=2), ["MuseCL", "SV only", "POI only"]) == 1
    pd.testing.assert_frame_equal(one, two)
    assert list(one["method"].unique()) == methods  # the table keeps the asked order
    for name in ["attention.csv", *(f"embeddings/{m}.csv" for m in methods)]:
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name
    assert len(list((tmp_path / "cache-two").glob("encoder-satellite/*/key.json"))) == 1


def test_named_toy_city_from_an_older_generator_is_made_again(tmp_path, monkeypatch):
    """``toy-small`` in a cities folder written by generator version 1 is regenerated, not reused."""
    import yaml

    from musecl import runner

    monkeypatch.chdir(tmp_path)  # a folder named toy-small in the working directory would win
    monkeypatch.setitem(runner.NAMED_CITIES, "toy-small", 20)
    folder = make_toy_city(tmp_path / "cities" / "toy-small", n_regions=20, seed=0, image_size=16,
                           progress=False)
    raw = yaml.safe_load((folder / "city.yaml").read_text())
    raw["generator"]["version"] = 1
    (folder / "city.yaml").write_text(yaml.safe_dump(raw))
    city = runner.resolve_city("toy-small", cities_dir=tmp_path / "cities")
    generator = city.meta.extra["generator"]
    assert city.root.resolve() == folder.resolve()
    assert generator["version"] == GENERATOR_VERSION and generator["n_regions"] == 20
    assert generator["image_size"] == 64  # made again by make_named_city, not the folder made above
    stamp = (folder / "city.yaml").stat().st_mtime_ns
    again = runner.resolve_city("toy-small", cities_dir=tmp_path / "cities")
    assert (folder / "city.yaml").stat().st_mtime_ns == stamp and len(again) == 20  # current: reused


def test_per_seed_retraining_refits_every_stage_for_each_seed(city, tmp_path):
    """retrain="per_seed": seed s trains MuseCL's stages with seed s and is scored on split s only,
    so its rows equal a one-seed run with seed=s; "once" scores the seed-0 stages on every split."""
    from musecl import runner

    two = dict(TINY.to_dict(), seeds=(0, 1), splits=("random",))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        per_seed = runner.run(city, tmp_path / "per", RunConfig(**dict(two, retrain="per_seed")), methods=["MuseCL"],
                              cache_dir=tmp_path / "cache", progress=False)
        once = runner.run(city, tmp_path / "once", RunConfig(**dict(two, retrain="once")), methods=["MuseCL"],
                          cache_dir=tmp_path / "cache", progress=False)
        alone = runner.run(city, tmp_path / "alone", RunConfig(**dict(two, seed=1, seeds=(1,), retrain="per_seed")),
                           methods=["MuseCL"], cache_dir=tmp_path / "cache", progress=False)
    assert sorted(set(per_seed["seed"])) == [0, 1] and len(per_seed) == len(once)
    key = ["indicator", "split", "seed"]
    seed1 = per_seed[per_seed["seed"] == 1].sort_values(key).reset_index(drop=True)
    pd.testing.assert_frame_equal(seed1, alone.sort_values(key).reset_index(drop=True))
    seed0 = per_seed[per_seed["seed"] == 0].sort_values(key).reset_index(drop=True)
    pd.testing.assert_frame_equal(seed0, once[once["seed"] == 0].sort_values(key).reset_index(drop=True))
    assert not np.allclose(seed1["r2"], once[once["seed"] == 1].sort_values(key)["r2"])  # other stages
    with pytest.raises(ValueError, match="retrain must be one of"):
        RunConfig(retrain="sometimes")


def test_every_params_file_is_a_valid_run_config():
    from pathlib import Path

    files = sorted((Path(__file__).parent.parent / "params").glob("*.yaml"))
    assert {f.name for f in files} >= {"ci.yaml", "cnn.yaml", "paper.yaml", "smoke.yaml"}
    configs = {f.name: RunConfig.from_yaml(f) for f in files}
    assert configs["ci.yaml"].image.rs_arch == configs["ci.yaml"].image.sv_arch == "lite0-head"
    assert configs["ci.yaml"].retrain == configs["paper.yaml"].retrain == "per_seed"
    assert configs["cnn.yaml"].image.rs_arch == "resnet18"


def test_a_rerun_into_the_same_folder_leaves_no_output_of_the_previous_run(city, tmp_path):
    """attention.csv, ceilings.csv and predictions.csv are written only for some methods and
    cities: one a rerun does not write again must not stay beside its results."""
    from musecl import runner

    out = tmp_path / "out"
    out.mkdir()
    (out / "attention.csv").write_text("region_id,sv,rs\nfrom another run,0.5,0.5\n")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        runner.run(city, out, TINY, methods=["POI only"], cache_dir=tmp_path / "cache", progress=False)
    assert not (out / "attention.csv").exists()
    assert (out / "ceilings.csv").exists() and (out / "results.csv").exists()


def test_a_failing_method_costs_only_its_own_rows(city, tmp_path, monkeypatch):
    """A method that cannot run (here: one that raises) is recorded in run.json and warned about;
    the other methods' rows, embeddings and results.csv are still written. All failing: an error."""
    import json

    from musecl import runner
    from musecl.methods.base import METHODS as REGISTRY, RegionEmbedder

    class Broken(RegionEmbedder):
        name = "Broken"

        def fit(self, city):
            raise ValueError("the city has no street views")

    monkeypatch.setitem(REGISTRY, "Broken", Broken)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        results = runner.run(city, tmp_path / "out", TINY, methods=["Broken", "POI only"],
                             cache_dir=tmp_path / "cache", progress=False)
    assert set(results["method"]) == {"POI only"}
    assert set(pd.read_csv(tmp_path / "out" / "results.csv")["method"]) == {"POI only"}
    info = json.loads((tmp_path / "out" / "run.json").read_text())
    assert info["failed_methods"] == {"Broken": "ValueError: the city has no street views"}
    assert any("Broken failed" in str(w.message) for w in caught)
    assert not (tmp_path / "out" / "embeddings" / "Broken.csv").exists()
    with pytest.raises(RuntimeError, match="every method failed: Broken: ValueError"):
        runner.run(city, tmp_path / "out2", TINY, methods=["Broken"], cache_dir=tmp_path / "cache", progress=False)


def test_fine_tuned_cnns_train_the_whole_cnns_with_the_fusion(city, tmp_path):
    """The end-to-end option on CNN encoders: eq. 11's loss (and the triplet terms) moves every
    CNN; its stage keeps the tuned CNNs, their region embeddings (the tables stage_table gives) and
    the fusion on them, starting from MuseCL's own image stages; it saves and loads."""
    from musecl.encoders.image import embed_regions, load_encoder
    from musecl.methods.base import HISTORY_CSV
    from musecl.methods.multisemantic import city_image_store

    cfg = TINY.replace(fusion_epochs=2, fusion_batch_size=8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tiny city: regions without POIs or images are expected
        plain = make_method("MuseCL", cfg, tmp_path / "cache", progress=False).fit(city)
        tuned = make_method("MuseCL (fine-tuned CNNs)", cfg, tmp_path / "cache", progress=False).fit(city)
    assert tuned.stage_dirs["streetview"] == plain.stage_dirs["streetview"]  # fine-tuning starts from these
    fused = tuned.stage_dirs["fusion"]
    start, end = load_encoder(plain.stage_dirs["streetview"] / "encoder"), load_encoder(fused / "encoder-sv")
    assert any(not torch.equal(a, b) for a, b in zip(start.parameters(), end.parameters()))
    history = pd.read_csv(fused / HISTORY_CSV)
    assert len(history) == 2 and {"train_infonce", "train_triplet_sv", "train_triplet_rs"} <= set(history.columns)
    store = city_image_store(city, "streetview", 32, tuned.cache, False, "memory")
    again = embed_regions(end, store, region_ids=city.region_ids, prefix="sv")
    pd.testing.assert_frame_equal(again, tuned.stage_table("streetview"), check_dtype=False, atol=1e-5)
    fused_table = tuned.transform(city)
    assert fused_table.notna().all().all() and not np.allclose(fused_table, plain.transform(city))
    tuned.save(tmp_path / "saved")
    pd.testing.assert_frame_equal(type(tuned).load(tmp_path / "saved").transform(city), fused_table)
    heads = cfg.replace(rs_arch="lite0-head", sv_arch="lite0-head")
    with pytest.raises(ValueError, match="fine-tuning cnns needs rs_arch and sv_arch to be a CNN"):
        make_method("MuseCL (fine-tuned CNNs)", heads, tmp_path / "cache", progress=False).fit(city)
