"""launcher.config: YAML option files checked against a program's own parser; the launcher's
--config; errors name the key, the expected type and the file."""
import argparse
import os
import subprocess
import sys

import pytest

from launcher import cli, config

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir, os.pardir))


def write(tmp_path, text, name="c.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def parser():
    p = argparse.ArgumentParser()
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--name", default="run")
    p.add_argument("--no-amp", action="store_true")
    p.add_argument("--ranks", type=config.CommaList(int), default=[1])
    p.add_argument("--mode", choices=("a", "b"), default="a")
    config.add_config_argument(p)
    return p


def test_file_values_become_defaults_and_flags_win(tmp_path):
    path = write(tmp_path, "epochs: 3\nlr: 1e-3\nname: x\nno-amp: true\nranks: [1, 2, 4]\nmode: b\n")
    args = config.parse_args(parser(), ["--config", path])
    assert (args.epochs, args.lr, args.name, args.no_amp, args.ranks, args.mode) == \
        (3, 1e-3, "x", True, [1, 2, 4], "b")
    args = config.parse_args(parser(), ["--config", path, "--epochs", "7", "--ranks", "8"])
    assert (args.epochs, args.ranks, args.lr) == (7, [8], 1e-3)


def test_without_config_it_is_plain_argparse():
    assert config.parse_args(parser(), ["--epochs", "2"]).epochs == 2


def test_keys_with_dashes_or_underscores_and_comma_strings(tmp_path):
    path = write(tmp_path, "no_amp: false\nranks: '2,4'\nlr: 2\n")
    args = config.parse_args(parser(), ["--config", path])
    assert args.no_amp is False and args.ranks == [2, 4] and args.lr == 2.0
    assert isinstance(args.lr, float)


@pytest.mark.parametrize("text,message", [
    ("epoch: 3\n", "unknown key 'epoch'"),
    ("epochs: ten\n", "key 'epochs' must be int, got str ('ten')"),
    ("epochs: 2.5\n", "key 'epochs' must be int, got float"),
    ("epochs: true\n", "key 'epochs' must be int, got bool"),
    ("lr: fast\n", "key 'lr' must be float, got str"),
    ("no-amp: 1\n", "key 'no-amp' must be true or false, got int"),
    ("ranks: [1, two]\n", "key 'ranks' must be list of int"),
    ("ranks: {a: 1}\n", "key 'ranks' must be list of int, got dict"),
    ("mode: c\n", "key 'mode' must be one of a, b, got 'c'"),
    ("name: 3\n", "key 'name' must be str, got int"),
    ("- epochs\n", "must hold a mapping of option names to values, not a list"),
    ("epochs: [\n", "not valid YAML"),
])
def test_bad_files_are_rejected_naming_the_key_and_the_file(tmp_path, text, message):
    path = write(tmp_path, text, "bad.yaml")
    with pytest.raises(config.ConfigError) as info:
        config.check(config.load_yaml(path), parser(), path)
    assert message in str(info.value) and path in str(info.value)


def test_unknown_key_error_lists_the_known_keys(tmp_path):
    path = write(tmp_path, "epoch: 3\n")
    with pytest.raises(config.ConfigError, match=r"known keys: epochs, lr, mode, name, no_amp, ranks"):
        config.check(config.load_yaml(path), parser(), path)


def test_empty_file_changes_nothing(tmp_path):
    path = write(tmp_path, "")
    assert config.parse_args(parser(), ["--config", path]).epochs == 10


def test_a_bad_file_ends_the_program_with_status_2(tmp_path, capsys):
    path = write(tmp_path, "epochs: ten\n")
    with pytest.raises(SystemExit) as info:
        config.parse_args(parser(), ["--config", path])
    assert info.value.code == 2
    assert f"{path}: key 'epochs' must be int" in capsys.readouterr().err


def test_missing_file_is_an_error(tmp_path, capsys):
    with pytest.raises(SystemExit):
        config.parse_args(parser(), ["--config", str(tmp_path / "nope.yaml")])
    assert "nope.yaml" in capsys.readouterr().err


def test_sub_command_options_come_from_the_chosen_sub_command(tmp_path):
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="command")
    run = sub.add_parser("run")
    run.add_argument("--steps", type=int, default=1)
    config.add_config_argument(run)
    other = sub.add_parser("other")
    other.add_argument("--size", type=int)
    good, bad = write(tmp_path, "steps: 5\n"), write(tmp_path, "size: 5\n", "bad.yaml")
    assert config.parse_args(p, ["run", "--config", good]).steps == 5
    with pytest.raises(config.ConfigError, match="unknown key 'size'"):
        config.check(config.load_yaml(bad), run, bad)


# ------------------------------------------------------------------- launcher --config

def launcher(*argv):
    return subprocess.run([sys.executable, "-m", "launcher", *argv], capture_output=True,
                          text=True, cwd=ROOT, timeout=120)


def test_launcher_takes_its_options_from_the_file_and_flags_override(tmp_path):
    path = write(tmp_path, "n: 3\nthreads: 1\nseed: 7\noutput: rank0\nstall-seconds: 30\n")
    args = config.parse_args(cli.build_parser(), ["--config", path, "train.py", "--lr", "1"])
    assert (args.nproc, args.threads, args.seed, args.output, args.stall_seconds) == \
        (3, 1, 7, "rank0", 30.0)
    assert args.script == "train.py" and args.args == ["--lr", "1"]
    out = launcher("--config", path, "-n", "2", "--dry-run", "train.py", "--lr", "1")
    assert out.returncode == 0, out.stderr
    cmd = out.stdout.split()
    assert cmd[cmd.index("-n") + 1] == "2"          # the flag beat the file's 3
    worker = cmd[cmd.index("--worker"):]
    for option, value in [("--threads", "1"), ("--seed", "7"), ("--output", "rank0"),
                          ("--stall-seconds", "30.0")]:
        assert worker[worker.index(option) + 1] == value
    assert worker[-3:] == ["train.py", "--lr", "1"] and "--config" not in worker


def test_launcher_rejects_an_unknown_key_naming_it_and_the_file(tmp_path):
    path = write(tmp_path, "n: 2\nnprocs: 4\n", "job.yaml")
    out = launcher("--config", path, "--dry-run", "train.py")
    assert out.returncode == 2
    assert f"{path}: unknown key 'nprocs'" in out.stderr


def test_launcher_rejects_a_wrong_type_naming_key_type_and_file(tmp_path):
    path = write(tmp_path, "threads: two\n", "job.yaml")
    out = launcher("--config", path, "--dry-run", "train.py")
    assert out.returncode == 2
    assert f"{path}: key 'threads' must be int, got str ('two')" in out.stderr
