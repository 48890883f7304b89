"""The benchmark on tiny sizes: well-formed numbers, a parseable report. No timing assertions."""
from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
import torch

from musecl.scaling import bench
from musecl.city import SATELLITE, STREETVIEW

torch.set_num_threads(1)

TINY = bench.BenchSizes(
    rs_arch="tiny", rs_size=32, rs_batch=4, sv_arch="tiny", sv_size=32, sv_batch=3, steps=2, repeats=2,
    warmup=1, grid_arch="tiny", grid_size=32, grid_batch=12, grid_threads=(1,), grid_steps=1,
    sampling_n=(200, 400), sampling_dims=(2, 5), sampling_triplets=200, sampling_repeats=1,
    text_tokens=4000, text_epochs=2, fusion_regions=80, fusion_epochs=2, probe_rows=40, probe_epochs=3,
    small_repeats=1)


def positive(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def test_growth_exponent_recovers_a_known_power_law():
    n = np.array([1_000, 10_000, 100_000])
    assert bench.growth_exponent(n, 3e-5 * n ** 1.5) == pytest.approx(1.5)
    assert bench.growth_exponent([10, 20], [2.0, 2.0]) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="two different sizes"):
        bench.growth_exponent([10, 10], [1.0, 2.0])
    with pytest.raises(ValueError, match="positive"):
        bench.growth_exponent([10, 20], [0.0, 1.0])


def test_ratio_and_median():
    assert bench.throughput_ratio(90.0, 100.0) == pytest.approx(0.9)
    with pytest.raises(ValueError, match="positive"):
        bench.throughput_ratio(1.0, 0.0)
    assert bench.median([3, 1, 2]) == 2.0
    with pytest.raises(ValueError):
        bench.median([])


def test_synthetic_store_and_triplets_are_real_inputs():
    store = bench.synthetic_store(STREETVIEW, 30, 16, seed=1)
    assert store.images.dtype == torch.uint8 and store.images.shape[1:] == (3, 16, 16)
    assert store.n_regions == 30 and int(store.counts.min()) >= 1
    trip = bench.synthetic_triplets(store, 20, seed=1)
    assert len(trip) == 20 and set(trip.region_ids) == set(store.region_ids)
    again = bench.synthetic_triplets(bench.synthetic_store(STREETVIEW, 30, 16, seed=1), 20, seed=1)
    assert np.array_equal(trip.anchor, again.anchor) and np.array_equal(trip.negative, again.negative)


def test_synthetic_pois_hit_the_token_budget():
    from musecl.encoders.text import poi_sentences

    pois = bench.synthetic_pois(5_000, seed=0)
    tokens = sum(len(s) for s in poi_sentences(pois))
    assert 4_500 <= tokens <= 5_500


def test_bench_encoder_compares_like_with_like():
    row = bench.bench_encoder(SATELLITE, "tiny", 32, batch_size=4, steps=2, repeats=2, warmup=1)
    assert row["images_per_step"] == 12 and row["optimizer_step"] == "in both"
    assert len(row["loop_samples"]) == len(row["raw_samples"]) == 2
    for key in ("loop_images_per_s", "raw_images_per_s", "ratio", "raw_fwd_bwd_no_optimizer_images_per_s"):
        assert positive(row[key]), key
    assert row["ratio"] == pytest.approx(row["loop_images_per_s"] / row["raw_images_per_s"])


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    return bench.run_benchmark(sizes=TINY, out=out, include_end_to_end=False, progress=False), out


def test_run_benchmark_tiny_writes_json_whose_last_line_is_the_headline(tiny_run):
    result, out = tiny_run
    saved = json.loads((out / bench.BENCH_JSON).read_text())
    assert saved["headline"] == json.loads(json.dumps(result["headline"]))
    head = result["headline"]
    for key in ("train_vs_raw_ratio_rs", "train_vs_raw_ratio_sv", "loop_images_per_s_rs", "raw_images_per_s_sv",
                "sampling_s_at_n_max", "sampling_peak_mb_at_n_max", "text_s_per_million_tokens", "fusion_s",
                "probe_s"):
        assert positive(head[key]), key
    assert math.isfinite(head["sampling_exponent"]) and head["sampling_n_max"] == 400
    assert "end_to_end_s" not in head and result["end_to_end"] is None
    enc = {e["kind"]: e for e in result["encoders"]}
    assert head["train_vs_raw_ratio_rs"] == pytest.approx(
        enc[SATELLITE]["loop_images_per_s"] / enc[SATELLITE]["raw_images_per_s"], abs=1e-3)
    assert set(result["sampling"]["exponent"]) == {"2", "5"}
    assert {(r["n_regions"], r["dim"]) for r in result["sampling"]["rows"]} == {(200, 2), (200, 5), (400, 2), (400, 5)}
    grid = result["cpu_settings"]["rows"]
    assert {(r["channels_last"], r["threads"]) for r in grid} == {(False, 1), (True, 1)}
    assert all(positive(r["images_per_s"]) for r in grid)
    assert all(positive(v) for v in result["stage_seconds"].values())
    assert result["fusion"]["threads"] == 1 and positive(result["fusion"]["seconds"])
    machine = result["machine"]
    assert machine["torch_threads"] == 1 and machine["torch"] == torch.__version__ and machine["cpu_count"] >= 1
    assert torch.get_num_threads() == 1  # the thread grid restores the setting

    lines = bench.format_report(result).splitlines()
    assert json.loads(lines[-1]) == {"headline": saved["headline"]}
    assert json.loads("\n".join(lines[:-1]))["settings"]["steps"] == 2


def test_cli_main_passes_options_and_prints_the_headline_last(monkeypatch, capsys, tiny_run, tmp_path):
    seen = {}

    def fake_run(**kwargs):
        seen.update(kwargs)
        return tiny_run[0]

    monkeypatch.setattr(bench, "run_benchmark", fake_run)
    assert bench.main(["--quick", "--no-end-to-end", "--out", str(tmp_path)]) == 0
    assert seen == {"quick": True, "out": tmp_path, "include_end_to_end": False, "params_file": None}
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert json.loads(last)["headline"] == json.loads(json.dumps(tiny_run[0]["headline"]))


def test_the_raw_step_takes_the_adam_step_the_trainer_takes():
    """Like with like: the bare step that the loop is compared with updates the weights as Adam
    (amsgrad, as the Trainer) does, so the ratio does not flatter the loop by leaving the step out."""
    from musecl.encoders.image import TripletObjective, build_encoder

    model = build_encoder("tiny", 128, "random", seed=0)
    reference = copy.deepcopy(model)
    start = {name: p.detach().clone() for name, p in model.named_parameters()}
    images = bench.synthetic_store(SATELLITE, 64, 32, seed=0).images[:12]
    objective = TripletObjective("cosine")
    bench.raw_step_throughput(model, objective, images, steps=1, lr=5e-4)
    reference.train()
    optimizer = torch.optim.Adam(reference.parameters(), lr=5e-4, amsgrad=True)
    objective(reference, images)["loss"].backward()
    optimizer.step()
    for (name, got), want in zip(model.named_parameters(), reference.parameters()):
        torch.testing.assert_close(got, want, msg=name)
    assert any(not torch.equal(start[name], p) for name, p in model.named_parameters())


def test_missing_end_to_end_params_is_a_clear_error(tmp_path, monkeypatch):
    """Said before anything is timed, naming the file and what to pass."""
    monkeypatch.setattr(bench, "bench_encoder", lambda *a, **k: pytest.fail("the benchmark ran before the check"))
    missing = tmp_path / "settings" / "nope.yaml"
    with pytest.raises(FileNotFoundError, match=r"end-to-end settings .*nope\.yaml not found; pass params_file="):
        bench.run_benchmark(sizes=TINY, include_end_to_end=True, params_file=missing, progress=False)


def test_the_accelerator_grid_runs_every_setting_on_any_device():
    from musecl.scaling.bench import bench_accelerator

    result = bench_accelerator("cpu", encoders=(("satellite", "tiny", 16, 2),), amps=("off",), steps=1, repeats=1,
                               warmup=0, larger_batch=2, progress=False)
    settings = [(r["store"], r["channels_last"], r["batch_triplets"]) for r in result["rows"]]
    assert settings[:2] == [("host", False, 2), ("device", False, 2)]
    assert settings[2][1] is True and settings[3] == (settings[2][0], True, 4)  # channels_last, then 2x batch
    assert all(r["ratio"] > 0 for r in result["rows"]) and result["compile"] == []
    assert result["fastest"]["satellite"] in result["rows"]


def test_throughput_runs():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LazyLinear(4))
    model(torch.zeros(1, 3, 8, 8))
    as_float = torch.nn.Sequential(_Float(), model)  # the images come as uint8
    assert bench.throughput(as_float, batch=4, input_size=8, steps=2, warmup=1) > 0


class _Float(torch.nn.Module):
    def forward(self, x):
        return x.float() / 255
