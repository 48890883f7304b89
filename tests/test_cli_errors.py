"""`musecl` turns a known error (bad setting, missing file or city folder) into its message on
stderr and a non-zero exit; `--debug` shows the traceback instead."""
import pytest

from musecl import cli
from musecl.config import ConfigError


def run_cli(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(err, *parts):
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for part in parts:
        assert part in lines[0]


def test_a_typo_in_the_params_file_names_file_and_key(capsys, tmp_path):
    params = tmp_path / "typo.yaml"
    params.write_text("seed: 0\nrs_epoch: 3\n")
    code, _, err = run_cli(capsys, "run", str(tmp_path / "no-city"), "--out", str(tmp_path / "out"),
                           "--params", str(params))
    assert code != 0
    assert_one_line_error(err, "typo.yaml", "rs_epoch", "did you mean 'rs_epochs'")
    assert not (tmp_path / "out").exists()


def test_a_bad_value_names_the_allowed_ones(capsys, tmp_path):
    params = tmp_path / "bad.yaml"
    params.write_text("splits: [random, diagonal]\n")
    code, _, err = run_cli(capsys, "run", "toy-small", "--out", str(tmp_path / "out"), "--params", str(params))
    assert code != 0
    assert_one_line_error(err, "bad.yaml", "splits", "('random', 'spatial', 'spatial-cv')")


def test_a_key_given_twice_in_the_params_file(capsys, tmp_path):
    params = tmp_path / "twice.yaml"
    params.write_text("seed: 0\nrs_epochs: 2\nseed: 1\n")
    code, _, err = run_cli(capsys, "run", "toy-small", "--out", str(tmp_path / "out"), "--params", str(params))
    assert code != 0
    assert_one_line_error(err, "twice.yaml", "key 'seed' is given twice", "lines 1 and 3")
    assert not (tmp_path / "out").exists()


def test_a_missing_params_file(capsys, tmp_path):
    code, _, err = run_cli(capsys, "run", "toy-small", "--out", str(tmp_path / "out"),
                           "--params", str(tmp_path / "missing.yaml"))
    assert code != 0
    assert_one_line_error(err, "missing.yaml")


def test_a_missing_city_folder_for_run(capsys, tmp_path):
    code, _, err = run_cli(capsys, "run", str(tmp_path / "no-city"), "--out", str(tmp_path / "out"))
    assert code != 0
    assert_one_line_error(err, "no-city")


def test_a_missing_city_folder_for_validate(capsys, tmp_path):
    code, _, err = run_cli(capsys, "validate", str(tmp_path / "no-city"))
    assert code != 0
    assert "no-city" in err and "Traceback" not in err


def test_debug_reraises(tmp_path):
    params = tmp_path / "typo.yaml"
    params.write_text("rs_epoch: 3\n")
    with pytest.raises(ConfigError, match="rs_epoch"):
        cli.main(["--debug", "run", "toy-small", "--out", str(tmp_path / "out"), "--params", str(params)])


def test_interrupt_exits_130(capsys, monkeypatch, tmp_path):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_validate", interrupted)
    code, _, err = run_cli(capsys, "validate", str(tmp_path))
    assert code == 130 and "interrupted" in err


def test_a_bug_keeps_its_traceback(monkeypatch, tmp_path):
    def buggy(args):
        raise KeyError("a bug")

    monkeypatch.setattr(cli, "_validate", buggy)
    with pytest.raises(KeyError):
        cli.main(["validate", str(tmp_path)])


def test_a_folder_given_as_the_params_file(capsys, tmp_path):
    code, _, err = run_cli(capsys, "run", "toy-small", "--out", str(tmp_path / "out"), "--params", str(tmp_path))
    assert code != 0
    assert_one_line_error(err, "Is a directory")


def test_a_gpu_this_machine_lacks_is_said_before_anything_trains(capsys, tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    code, _, err = run_cli(capsys, "run", "toy-small", "--out", str(tmp_path / "out"), "--device", "cuda")
    assert code != 0
    assert_one_line_error(err, "'cuda'", "no CUDA GPU")
    assert not (tmp_path / "out").exists()
