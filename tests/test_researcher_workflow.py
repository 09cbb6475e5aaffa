"""Issue 20: the researcher's workflow, from your own speakers to a fine-tuned model, on the CPU.

own speakers -> tools/create_mixtures.py -> Custom recipe (tiny YAML) -> resume -> nass-evaluate
-> fine-tune with --init_from on a second folder -> nass-separate on a folder of files, with
only the options the README shows (plus tiny step budgets). And the pieces: fine-tuning
reports, either-depth data folders, split errors, self-contained YAMLs, training curves,
TensorBoard, --help, nass-prepare, progress bars.
"""

import glob
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from hyperpyyaml import load_hyperpyyaml

from conftest import REPO, synthetic_voice
from nass.dataio.audio import read_audio, write_audio

SR = 8000
TINY = os.path.join(REPO, "recipes", "Custom", "separation", "hparams", "tiny")
DEMO = os.path.join(REPO, "recipes", "LibriMix", "separation", "hparams", "demo")


@pytest.fixture(autouse=True)
def _restore_logging():
    """The recipes run in this process: SpeechBrain's experiment set-up adds logging handlers
    bound to the (captured) streams of the test; remove them again so later tests' logs do
    not go to a closed stream."""
    import logging

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for h in list(root.handlers):
        if h not in handlers:
            root.removeHandler(h)
    root.setLevel(level)


def _load_tool(name):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, "tools", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def own_speakers(root, seed, num_speakers=8, utterances=2, seconds=0.5):
    """``root/speakers/<speaker>/<utt>.wav`` (distinct pitches) and ``root/noise/*.wav``."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    for s in range(num_speakers):
        f0 = 100 + 40 * s + rng.uniform(0, 10)
        for u in range(utterances):
            write_audio(os.path.join(root, "speakers", f"spk{seed}{s}", f"u{u}.wav"),
                        0.3 * synthetic_voice(rng, n, SR, f0), SR)
    for k in range(4):
        write_audio(os.path.join(root, "noise", f"n{k}.wav"), (0.1 * rng.standard_normal(n)).astype("float32"), SR)
    return os.path.join(root, "speakers"), os.path.join(root, "noise")


def make_corpus(root, seed):
    """The README's create_mixtures.py command on generated speakers; returns ``<root>/Libri2Mix``."""
    speech, noise = own_speakers(root, seed)
    out = os.path.join(root, "Libri2Mix")
    create = _load_tool("create_mixtures")
    assert create.main(["--speech", speech, "--noise", noise, "--out", out, "--n_train", "4", "--n_dev", "2",
                        "--n_test", "2", "--fractions", "train=0.5", "dev=0.25", "test=0.25", "--seed", str(seed)]) == 0
    return out


def train(yaml, *args):
    from nass.runner import run_separation

    return run_separation([yaml, *args])


def jsonl(folder):
    with open(os.path.join(folder, "train_log.jsonl"), encoding="utf-8") as f:
        return [json.loads(line) for line in f]


# ----------------------------------------------------------------------------- the whole path
def test_own_speakers_to_fine_tuned_model_to_separated_folder(tmp_path, capsys):
    from nass.cli import evaluate_main, separate_main

    corpus = make_corpus(str(tmp_path / "mine"), seed=1)
    model = str(tmp_path / "results" / "mine")
    yaml = os.path.join(TINY, "dprnn-stft-tiny-noise.yaml")  # the demo model
    # --data_folder is what create_mixtures.py --out wrote: no split names, no --dataset
    train(yaml, f"--data_folder={corpus}", f"--output_folder={model}", "--optimizer_step_limit=2",
          "--tensorboard=True")
    rows = jsonl(model)
    assert [r["optimizer_step"] for r in rows if "valid" in r] == [1, 2]
    assert os.path.isfile(os.path.join(model, "training_curves.png"))
    assert glob.glob(os.path.join(model, "tensorboard", "events.out.tfevents.*"))
    assert os.path.isfile(os.path.join(model, "test", "test_metrics.csv"))

    # the same command with a larger budget resumes (optimiser step 3 follows step 2)
    train(yaml, f"--data_folder={corpus}", f"--output_folder={model}", "--optimizer_step_limit=3",
          "--tensorboard=True")
    assert [r["optimizer_step"] for r in jsonl(model) if "valid" in r] == [1, 2, 3]

    manifest = os.path.join(model, "save", "custom_test.csv")
    assert evaluate_main(["--model", model, "--manifest", manifest, "--out", str(tmp_path / "eval")]) == 0
    assert os.path.isfile(str(tmp_path / "eval" / "test_metrics.csv"))

    # fine-tune that model on a second folder (other speakers)
    second = make_corpus(str(tmp_path / "second"), seed=2)
    tuned = str(tmp_path / "results" / "tuned")
    capsys.readouterr()
    train(os.path.join(TINY, "dprnn-stft-tiny-noise-finetune.yaml"), f"--data_folder={second}",
          f"--init_from={model}", f"--output_folder={tuned}", "--optimizer_step_limit=2")
    printed = capsys.readouterr().out
    assert "0 new, 0 unused" in printed  # same architecture: every tensor loaded
    report = json.load(open(os.path.join(tuned, "init_from.json")))
    assert report["separator"]["new"] == {} and os.path.dirname(report["source"]).startswith(os.path.join(model, "save"))
    assert [r["optimizer_step"] for r in jsonl(tuned) if "valid" in r] == [1, 2]  # a fresh schedule

    # nass-separate on a folder of files
    recordings = tmp_path / "recordings"
    for name in ("a", "b"):
        mix, _ = read_audio(glob.glob(os.path.join(second, "wav8k", "min", "test", "mix_both", "*.wav"))[0])
        write_audio(str(recordings / f"{name}.wav"), mix, SR)
    out = tmp_path / "separated"
    assert separate_main([str(recordings), "--model", tuned, "--out", str(out)]) == 0
    for name in ("a", "b"):
        assert sorted(os.listdir(out / name)) == ["noise.wav", "s1.wav", "s2.wav"]


# ----------------------------------------------------------------------------- fine-tuning
def _separator(yaml, tmp_path):
    with open(yaml, encoding="utf-8") as f:
        return load_hyperpyyaml(f, {"data_folder": str(tmp_path), "output_folder": str(tmp_path / "o"),
                                    "init_from": None})


def test_init_from_reports_the_new_noise_head_by_name(tmp_path, capsys):
    from nass.runner import apply_init_from

    plain = _separator(os.path.join(TINY, "sepformer-tiny.yaml"), tmp_path)["separator"]
    exported = tmp_path / "exported"
    exported.mkdir()
    torch.save(plain.state_dict(), exported / "separator.ckpt")  # an exported model folder
    hp = _separator(os.path.join(TINY, "sepformer-tiny-noise.yaml"), tmp_path)
    report = apply_init_from(str(exported), hp["modules"], hp["checkpointer"], str(tmp_path / "run"))
    new = report["separator"]["new"]
    assert new and all(name.startswith("masknet.conv2d.") for name in new), new  # only the mask head
    assert all("shape" in reason for reason in new.values())
    assert "new (initialised fresh): separator.masknet.conv2d.weight" in capsys.readouterr().out
    loaded = hp["separator"].state_dict()
    for name in report["separator"]["loaded"]:
        assert torch.equal(loaded[name], plain.state_dict()[name])
    assert json.load(open(tmp_path / "run" / "init_from.json"))["separator"]["new"] == new


def test_init_from_is_skipped_when_the_run_has_its_own_checkpoint(tmp_path, capsys):
    from nass.runner import apply_init_from

    hp = _separator(os.path.join(TINY, "sepformer-tiny.yaml"), tmp_path)
    hp["checkpointer"].save_checkpoint()
    assert apply_init_from("/nonexistent", hp["modules"], hp["checkpointer"]) is None
    assert "resuming" in capsys.readouterr().out


def test_freeze_encoder_keeps_the_encoder(tmp_path):
    from nass.runner import freeze_encoder

    sep = _separator(os.path.join(TINY, "dprnn-tiny.yaml"), tmp_path)["separator"]
    assert freeze_encoder(sep) == len(list(sep.encoder.parameters()))
    assert not any(p.requires_grad for p in sep.encoder.parameters())
    assert all(p.requires_grad for p in sep.masknet.parameters())


def test_every_recipe_and_correction_yaml_takes_init_from():
    files = glob.glob(os.path.join(REPO, "recipes", "*", "*", "hparams", "**", "*.yaml"), recursive=True)
    assert len(files) > 80
    missing = [f for f in files if not any(line.startswith("init_from:") for line in open(f, encoding="utf-8"))]
    assert missing == []


def test_correction_init_from_copies_the_score_model(tmp_path, capsys):
    from nass.runner import corrector_init_from
    from nass.correction import BBEDSDE, GeCoModel, ScoreModel, SpecTransform, save_corrector

    torch.manual_seed(0)
    trained = GeCoModel(BBEDSDE(), ScoreModel.tiny(), SpecTransform())
    save_corrector(trained, str(tmp_path / "run" / "corrector"))
    torch.manual_seed(1)
    fresh = GeCoModel(BBEDSDE(), ScoreModel.tiny(), SpecTransform())
    report = corrector_init_from(str(tmp_path / "run"), fresh)  # a GeCo training output folder
    assert report["new"] == {} and report["loaded"]
    for (name, a), b in zip(trained.score_model.state_dict().items(), fresh.score_model.state_dict().values()):
        assert torch.equal(a, b), name


def test_correction_yamls_accept_the_same_overrides():
    for folder in ("recipes/LibriMix/correction/hparams", "recipes/Custom/correction/hparams"):
        for name in ("", "demo/", "tiny/"):
            suffix = "-tiny" if name else ""
            pair = [os.path.join(REPO, folder, f"{name}{m}{suffix}.yaml") for m in ("geco", "fast-geco")]
            if not all(os.path.isfile(p) for p in pair):
                continue
            keys = [{line.split(":")[0] for line in open(p) if line[:1].isalpha()} for p in pair]
            for key in ("valid_steps", "valid_si_snr_utterances", "valid_seed", "init_from", "valid_utterances"):
                assert all(key in k for k in keys), (pair, key)


# ----------------------------------------------------------------------------- data folders
def test_custom_folder_at_either_depth_and_split_errors(tmp_path):
    from nass.dataio.manifest import DatasetError
    from nass.dataio.prepare import prepare_dataset

    corpus = make_corpus(str(tmp_path), seed=3)
    splits = ["train", "dev", "test"]
    root = prepare_dataset("custom", corpus, str(tmp_path / "a"), splits=splits)
    deep = prepare_dataset("custom", os.path.join(corpus, "wav8k", "min"), str(tmp_path / "b"), splits=splits)
    assert open(root["dev"]).read() == open(deep["dev"]).read()
    with pytest.raises(DatasetError, match="Splits that exist: dev, test, train") as err:
        prepare_dataset("custom", corpus, str(tmp_path / "c"), splits=["train", "valid"])
    assert "metadata" not in str(err.value)
    with pytest.raises(DatasetError, match="--data_folder=" + os.path.join(corpus, "wav8k", "min") + "$"):
        prepare_dataset("custom", os.path.join(corpus, "wav8k", "min", "dev"), str(tmp_path / "d"), splits=splits)
    with pytest.raises(DatasetError, match="wav16k.*has .*wav8k.min"):
        prepare_dataset("custom", corpus, str(tmp_path / "e"), splits=splits, sample_rate=16000)


def test_a_missing_split_is_one_line_not_a_traceback(tmp_path):
    corpus = make_corpus(str(tmp_path), seed=4)
    cmd = [sys.executable, os.path.join(REPO, "recipes", "Custom", "separation", "train.py"),
           os.path.join(TINY, "dprnn-tiny.yaml"), f"--data_folder={corpus}", f"--output_folder={tmp_path / 'o'}",
           "--valid_split=valid"]
    result = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: custom data: split(s) 'valid' not found") and "dev, test, train" in last


# ----------------------------------------------------------------------------- YAMLs
def test_a_copied_yaml_loads_and_every_model_size_is_a_key(tmp_path):
    for src in (os.path.join(DEMO, "sepformer-tiny-unified-gm.yaml"), os.path.join(TINY, "convtasnet-tiny.yaml")):
        copy = tmp_path / os.path.basename(src)
        shutil.copy(src, copy)  # elsewhere: no relative !include to break
        with open(copy, encoding="utf-8") as f:
            hp = load_hyperpyyaml(f, {"data_folder": str(tmp_path), "output_folder": str(tmp_path / "o"),
                                      "kernel_size": 8, "kernel_stride": 4})
        assert hp["separator"].encoder.conv1d.kernel_size == (8,)
    overrides = {"num_layers": 2, "num_blocks": 1, "nhead": 2, "d_ffn": 32, "K": 50, "enhancer_num_layers": 2}
    with open(os.path.join(DEMO, "sepformer-tiny-unified-gm.yaml"), encoding="utf-8") as f:
        hp = load_hyperpyyaml(f, {"data_folder": str(tmp_path), "output_folder": str(tmp_path / "o"), **overrides})
    masknet = hp["separator"].masknet
    assert masknet.K == 50 and len(masknet.dual_mdl) == 1
    assert len(masknet.dual_mdl[0].intra_mdl.mdl.layers) == 2
    assert len(hp["separator"].enhancer.dual_mdl[0].intra_mdl.mdl.layers) == 2
    full = os.path.join(REPO, "recipes", "Custom", "separation", "hparams", "sepformer.yaml")
    keys = {line.split(":")[0] for line in open(full) if line[:1].isalpha()}
    assert {"num_layers", "num_blocks", "nhead", "d_ffn", "K", "kernel_size", "kernel_stride"} <= keys


def test_train_help_lists_the_yaml_keys_in_file_order(tmp_path):
    yaml = os.path.join(TINY, "dprnn-tiny.yaml")
    cmd = [sys.executable, os.path.join(REPO, "recipes", "Custom", "separation", "train.py"), yaml, "--help"]
    runs = [subprocess.run(cmd, capture_output=True, text=True) for _ in range(2)]
    assert runs[0].returncode == 0 and runs[0].stdout == runs[1].stdout
    listed = [line.split("=")[0].strip()[2:] for line in runs[0].stdout.splitlines() if line.startswith("  --")]
    in_file = [line.split(":")[0] for line in open(yaml) if line[:1].isalpha()]
    assert listed[: len(in_file)] == in_file
    assert "--optimizer_step_limit" in runs[0].stdout.split("SpeechBrain run options:")[1]
    assert "torchvision" not in runs[0].stderr + runs[0].stdout


# ----------------------------------------------------------------------------- watching training
def test_training_curves_one_axis_per_term_nce_against_chance(tmp_path):
    from nass.curves import plot_training_curves

    path = tmp_path / "train_log.jsonl"
    stats = {"loss": 9.0, "si-snr": -2.0, "si-snr_input": -3.0, "noise_si-snr": 1.0, "noise_si-snr_input": 0.5,
             "nce": 5.4, "nce_chance": 5.55, "nce_loss": 16.2, "se_loss": 3.0, "se_identity": 4.0,
             "gm_conflict_fraction": 0.3}
    rows = [{"optimizer_step": k, "epoch_step": k, "lr": 1e-3, "train_running": stats} for k in (50, 100)]
    rows.append({"epoch": 1, "lr": 1e-3, "next_lr": 1e-3, "optimizer_step": 120, "train": stats, "valid": stats})
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    png = tmp_path / "training_curves.png"
    assert plot_training_curves(str(path), str(png)) == [
        "loss", "si-snr", "noise_si-snr", "se_loss", "nce", "gm_conflict_fraction", "lr"]
    assert png.read_bytes()[:4] == b"\x89PNG"
    from nass.curves import _value

    assert _value(stats, "loss") == pytest.approx(9.0 - 16.2)  # the loss axis leaves out the NCE term


def test_tensorboard_event_files(tmp_path):
    pytest.importorskip("torch.utils.tensorboard")
    from nass.curves import TensorBoardLog

    log = TensorBoardLog(str(tmp_path / "tensorboard"))
    log.log({"optimizer_step": 3, "lr": 0.1, "train_running": {"loss": 1.0, "si-snr": 2.0}})
    assert glob.glob(str(tmp_path / "tensorboard" / "events.out.tfevents.*"))


def test_nass_prepare_command(tmp_path, capsys):
    from nass.dataio.prepare import main

    corpus = make_corpus(str(tmp_path), seed=5)
    assert main(["custom", corpus, str(tmp_path / "csv"), "--splits", "train", "dev", "test"]) == 0
    assert "test: " in capsys.readouterr().out and os.path.isfile(tmp_path / "csv" / "custom_test.csv")
    assert main(["custom", corpus, str(tmp_path / "csv2")]) == 2  # default splits: train valid test
    last = capsys.readouterr().err.strip().splitlines()[-1]  # (other tests' log handlers may add lines)
    assert last.startswith("nass-prepare: error: custom data: split(s) 'valid' not found") and "dev, test, train" in last


def test_evaluation_progress_bar(tmp_path, capsys):
    from nass.dataio.prepare import prepare_dataset
    from nass.evaluation import evaluate_manifest

    corpus = make_corpus(str(tmp_path), seed=6)
    csv = prepare_dataset("custom", corpus, str(tmp_path / "csv"), splits=["test"])["test"]

    def separate(mix):
        return torch.stack([mix, mix], dim=-1) / 2, None

    evaluate_manifest(separate, csv, str(tmp_path / "eval"), num_spks=2, sample_rate=SR, num_workers=0,
                      save_examples=0, progress=True)
    assert "separating custom_test.csv: 100%" in capsys.readouterr().err


def test_recipe_writes_tensorboard_events_and_curves(tmp_path):
    pytest.importorskip("torch.utils.tensorboard")
    corpus = make_corpus(str(tmp_path / "c"), seed=7)
    out = str(tmp_path / "run")
    train(os.path.join(TINY, "convtasnet-tiny.yaml"), f"--data_folder={corpus}", f"--output_folder={out}",
          "--optimizer_step_limit=1", "--tensorboard=True", "--test_split=null")
    assert glob.glob(os.path.join(out, "tensorboard", "events.out.tfevents.*"))
    assert os.path.isfile(os.path.join(out, "training_curves.png"))


def test_a_train_logger_class_override_says_to_use_tensorboard_true(tmp_path, capsys):
    """HyperPyYAML merges --train_logger=!new:OtherClass {...} into the YAML's FileTrainLogger
    (a TypeError deep in the YAML load): refused up front, pointing at --tensorboard=True."""
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as err:
        train(os.path.join(TINY, "convtasnet-tiny.yaml"), f"--data_folder={tmp_path}", f"--output_folder={out}",
              f"--train_logger=!new:speechbrain.utils.train_logger.TensorboardLogger {{save_dir: {tmp_path}/tb}}")
    message = str(err.value)
    assert "--train_logger=!new:speechbrain.utils.train_logger.TensorboardLogger" in message
    assert "!new:speechbrain.utils.train_logger.FileTrainLogger" in message and "--tensorboard=True" in message
    assert not out.exists()  # refused before anything was created


def test_corrector_training_folder_is_accepted(tmp_path):
    from nass.cli import load_corrector
    from nass.correction import BBEDSDE, GeCoModel, ScoreModel, SpecTransform, save_corrector

    save_corrector(GeCoModel(BBEDSDE(), ScoreModel.tiny(), SpecTransform()), str(tmp_path / "geco_tiny" / "corrector"))
    assert type(load_corrector(str(tmp_path / "geco_tiny"))).__name__ == "GeCoModel"


@pytest.mark.parametrize("command", ["separate_main", "evaluate_main", "prepare"])
def test_help_texts_show_defaults(command, capsys):
    import nass.cli
    import nass.dataio.prepare

    main = nass.dataio.prepare.main if command == "prepare" else getattr(nass.cli, command)
    with pytest.raises(SystemExit):
        main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: cpu)" in text or "(default: 8000)" in text
