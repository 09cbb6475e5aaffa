"""GeCo / Fast-GeCo recipe: triplets, CorrectionBrain, export, evaluation before/after correction."""

import csv
import json
import os
import sys

import numpy as np
import pytest
import torch

from nass.correction import BBEDSDE, GeCoModel, ScoreModel, SpecTransform, load_corrector
from nass.correction.data import TripletDataset, build_triplets, crop_triplet, read_triplets
from nass.dataio.audio import read_audio
from nass.dataio.prepare import prepare_dataset

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from conftest import write_librimix_tree  # noqa: E402
from test_inference import write_model_folder  # noqa: E402

SR = 8000
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: on a loaded 2-core machine it is several times faster for these tiny nets."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Tiny Libri2Mix tree (2 mixtures of 0.5 s per split) and its manifests."""
    root = str(tmp_path_factory.mktemp("Libri2Mix"))
    write_librimix_tree(root, n_per_split=2, seconds=0.5)
    manifests = prepare_dataset("librimix", root, os.path.join(root, "csv"), splits=["train", "dev", "test"])
    return root, manifests


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("separator"))
    write_model_folder(folder, noise=True, scores=(1.0,))
    return folder


def _swapping_separator(manifest_csv, calls):
    """A fake separator returning the references in swapped order (s2, s1)."""
    from nass.dataio.manifest import read_manifest

    lookup = {}
    for row in read_manifest(manifest_csv, 2):
        mix = read_audio(row["mix_wav"])[0]
        lookup[mix.tobytes()] = [read_audio(row[f"s{j}_wav"])[0] for j in (1, 2)]

    def separate(mix):
        calls.append(1)
        s1, s2 = lookup[mix[0].numpy().tobytes()]
        return torch.from_numpy(np.stack([s2, 0.5 * s1], -1)).unsqueeze(0)

    return separate


def test_triplets_undo_the_permutation_and_reuse_the_cache(tmp_path, corpus):
    _, manifests = corpus
    calls = []
    sep = _swapping_separator(manifests["test"], calls)
    fp = {"path": "fake", "mtime": 1}
    path = build_triplets(sep, manifests["test"], str(tmp_path), "test", fingerprint=fp)
    rows = read_triplets(path)
    assert [r["ID"] for r in rows] == ["test_000_s1", "test_000_s2", "test_001_s1", "test_001_s2"]
    assert path == os.path.join(str(tmp_path), "test", "triplets.csv")
    for r in rows:
        est, ref, mix = (read_audio(r[c])[0] for c in ("est_wav", "ref_wav", "mix_wav"))
        assert est.shape == ref.shape == mix.shape == (4000,)
        assert os.path.dirname(r["est_wav"]).endswith(os.path.join("test", "est"))
        # estimate k is the reference k (up to the fake separator's gain), never the other speaker
        scale = 0.5 if r["ID"].endswith("_s1") else 1.0
        np.testing.assert_allclose(est, scale * ref, atol=1e-6)
    assert len(calls) == 2
    stamp = os.stat(path).st_mtime_ns
    assert build_triplets(sep, manifests["test"], str(tmp_path), "test", fingerprint=fp) == path
    assert len(calls) == 2 and os.stat(path).st_mtime_ns == stamp  # reused, separator not run
    build_triplets(sep, manifests["test"], str(tmp_path), "test", fingerprint={"path": "fake", "mtime": 2})
    assert len(calls) == 4  # another checkpoint: rebuilt
    os.remove(rows[0]["est_wav"])  # an incomplete cache is rebuilt too
    build_triplets(sep, manifests["test"], str(tmp_path), "test", fingerprint={"path": "fake", "mtime": 2})
    assert len(calls) == 6 and os.path.isfile(rows[0]["est_wav"])


def test_triplets_from_a_separator_folder_track_the_checkpoint(tmp_path, corpus, model_dir):
    _, manifests = corpus
    path = build_triplets(model_dir, manifests["dev"], str(tmp_path), "dev")
    assert len(read_triplets(path)) == 4
    stamp = os.stat(path).st_mtime_ns
    build_triplets(model_dir, manifests["dev"], str(tmp_path), "dev")
    assert os.stat(path).st_mtime_ns == stamp
    ckpt = next(os.path.join(d, "separator.ckpt") for d, _, f in os.walk(model_dir) if "separator.ckpt" in f)
    st = os.stat(ckpt)
    os.utime(ckpt, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    try:
        build_triplets(model_dir, manifests["dev"], str(tmp_path), "dev")
        assert os.stat(path).st_mtime_ns != stamp
    finally:
        os.utime(ckpt, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_crop_triplet_same_region_and_quiet_restart():
    rng = np.random.default_rng(0)
    x = np.arange(100.0)
    m, e, r = crop_triplet(x, x + 1000, x + 2000, 10, rng)
    assert m[0] + 1000 == e[0] and m[0] + 2000 == r[0] and len(m) == 10
    quiet = np.zeros(100)
    quiet[0] = 1.0
    for _ in range(5):  # the estimate's crop is silent unless it starts at 0
        assert crop_triplet(x, quiet, x, 10, rng)[0][0] == 0.0


def test_quiet_separator_crops_start_anywhere_and_files_are_peak_normalised(tmp_path):
    """The reference's 0.05 quiet-crop threshold presumes peak-1 files: with a quiet
    separator (estimates peaking at 0.02) crops must still start anywhere, and the
    dataset serves each file at peak 1 (old code: every crop restarted at 0)."""
    from nass.dataio.audio import write_audio

    rng = np.random.default_rng(0)
    sig = rng.standard_normal(8000).astype("float32")
    quiet = 0.02 * sig / np.abs(sig).max()
    firsts = {float(crop_triplet(sig, quiet, sig, 1000, rng)[1][0]) for _ in range(10)}
    assert len(firsts) > 1, "every crop of the quiet estimate restarted at sample 0"
    paths = {}
    for name, x in (("m", 0.3 * sig), ("e", quiet), ("r", 0.5 * sig)):
        paths[name] = str(tmp_path / f"{name}.wav")
        write_audio(paths[name], x, SR, subtype="FLOAT")
    row = dict(ID="u_s1", duration=1.0, mix_wav=paths["m"], est_wav=paths["e"], ref_wav=paths["r"])
    item = TripletDataset([row], SR, crop_samples=0)[0]
    for key in ("mix", "est", "ref"):
        assert float(item[key].abs().max()) == pytest.approx(1.0, abs=1e-6), key
    raw = TripletDataset([row], SR, crop_samples=0, peak_normalise=False)[0]
    assert float(raw["est"].abs().max()) == pytest.approx(0.02, rel=1e-4)


def test_demo_fast_geco_learning_rate_moves_a_tiny_network(tmp_path):
    """The demo Fast-GeCo YAML's optimiser improves a tiny network's one-step output
    within 15 steps on one triplet (at the old 1e-5 it barely moves: issue 16)."""
    from hyperpyyaml import load_hyperpyyaml

    from nass.correction import save_corrector
    from nass.losses.si_snr import si_snr

    torch.manual_seed(0)
    save_corrector(GeCoModel(BBEDSDE(), ScoreModel.tiny(), SpecTransform()), str(tmp_path / "geco"))
    with open(os.path.join(ROOT, "recipes/LibriMix/correction/hparams/demo/fast-geco-tiny.yaml")) as f:
        hp = load_hyperpyyaml(f, {"geco_folder": str(tmp_path / "geco"), "separator_folder": "unused",
                                  "output_folder": str(tmp_path / "out")})
    model = hp["corrector"]
    opt = hp["optimizer"](model.parameters())
    g = torch.Generator().manual_seed(0)
    t = torch.arange(4032) / SR
    x = (torch.sin(2 * np.pi * 220 * t) * (0.6 + 0.4 * torch.sin(2 * np.pi * 3 * t))).unsqueeze(0)
    y = x + 0.3 * torch.randn(x.shape, generator=g)
    m = x + torch.randn(x.shape, generator=g)

    def score():
        out = model.correct(y, m, generator=torch.Generator().manual_seed(1))
        return si_snr(out, x).item()

    before = score()
    model.train()
    for _ in range(15):
        loss = model(y, m, x, objective="fast-geco")
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = score()
    assert after > before + 5, (before, after)


def _brain(tmp_path, corrector, mode, rows, lr):
    import speechbrain as sb

    from nass.brains.correction import CorrectionBrain

    counter = sb.utils.epoch_loop.EpochCounter(limit=1)
    ckpt = sb.utils.checkpoints.Checkpointer(
        str(tmp_path / f"save-{mode}"), recoverables={"corrector": corrector, "counter": counter}
    )
    # every key the Brain reads (no soft defaults: a missing one fails naming it)
    os.makedirs(tmp_path / f"out-{mode}", exist_ok=True)
    hparams = dict(correction_mode=mode, ema_decay=0.999, valid_steps=2, valid_si_snr_utterances=1,
                   valid_seed=0, epoch_counter=counter, train_logger=None, output_folder=str(tmp_path / f"out-{mode}"),
                   tensorboard=False, plot_training_curves=False)
    brain = CorrectionBrain(
        modules={"corrector": corrector}, opt_class=lambda p: torch.optim.Adam(p, lr=lr), hparams=hparams,
        run_opts={"device": "cpu", "noprogressbar": True}, checkpointer=ckpt,
    )
    train = TripletDataset(rows, SR, crop_samples=2048, epoch_size=2, seed=0)
    valid = TripletDataset(rows[:1], SR, crop_samples=0, random_crop=False)
    brain.train_set = train
    return brain, train, valid, counter


def test_correction_brain_both_modes_export_and_separate(tmp_path, corpus, model_dir):
    from nass.brains.correction import init_fast_geco
    from nass.inference import Separator, load_separator

    _, manifests = corpus
    rows = read_triplets(build_triplets(model_dir, manifests["train"], str(tmp_path / "trip"), "train"))
    torch.manual_seed(0)
    corrector = GeCoModel(BBEDSDE(), ScoreModel.tiny(), SpecTransform())
    before = [p.detach().clone() for p in corrector.parameters()]
    brain, train, valid, counter = _brain(tmp_path, corrector, "geco", rows, lr=1e-3)
    brain.fit(counter, train, valid, train_loader_kwargs={"batch_size": 2}, valid_loader_kwargs={"batch_size": 1})
    assert brain.optimizer_step == 1 and brain.ema.num_updates == 1
    assert any(not torch.equal(a, b) for a, b in zip(before, corrector.parameters()))
    assert all(torch.isfinite(p).all() for p in corrector.parameters())
    assert np.isfinite(brain.last_stats["loss"]) and np.isfinite(brain.last_stats["si-snr"])
    assert os.path.isfile(next(iter(brain.checkpointer.list_checkpoints())).path / "ema.ckpt")
    geco_dir = brain.export(str(tmp_path / "geco" / "corrector"))
    loaded = load_corrector(geco_dir)
    # exported weights are the moving average, not the raw training weights
    ema_state = brain.ema.shadow_params
    assert all(torch.equal(a, b) for a, b in zip(loaded.score_model.parameters(), ema_state))

    fast = init_fast_geco(str(tmp_path / "geco"))  # the GeCo output folder holding corrector/
    start = [p.detach().clone() for p in fast.parameters()]
    brain2, train2, valid2, counter2 = _brain(tmp_path, fast, "fast-geco", rows, lr=1e-3)
    brain2.fit(counter2, train2, valid2, train_loader_kwargs={"batch_size": 2},
               valid_loader_kwargs={"batch_size": 1})
    assert any(not torch.equal(a, b) for a, b in zip(start, fast.parameters()))
    assert -40 < brain2.last_stats["si-snr"] < 100
    fast_dir = brain2.export(str(tmp_path / "fast" / "corrector"))

    model, hp = load_separator(model_dir)
    sep = Separator(model, hp["sample_rate"], chunk_seconds=0, corrector=load_corrector(fast_dir))
    mix = torch.from_numpy(read_audio(rows[0]["mix_wav"])[0]).unsqueeze(0)
    corrected, _ = sep.separate_batch(mix)
    plain, _ = Separator(model, hp["sample_rate"], chunk_seconds=0).separate_batch(mix)
    assert corrected.shape == plain.shape == (1, 4000, 2) and torch.isfinite(corrected).all()
    assert not torch.allclose(corrected, plain)


def test_nass_evaluate_with_corrector_writes_both_tables(tmp_path, corpus, model_dir, capsys):
    from nass.cli import evaluate_main
    from nass.correction import save_corrector

    _, manifests = corpus
    torch.manual_seed(0)
    save_corrector(GeCoModel(BBEDSDE(), ScoreModel.tiny(), SpecTransform()), str(tmp_path / "corr"))
    out = tmp_path / "eval"
    code = evaluate_main(["--model", model_dir, "--manifest", manifests["test"], "--out", str(out),
                          "--corrector", str(tmp_path / "corr"), "--correction", "fast-geco",
                          "--correction", "geco", "--steps", "1", "--num_workers", "0", "--save_examples", "1"])
    assert code == 0, capsys.readouterr().err
    tables = {}
    for name in ("test_metrics.csv", "test_metrics_fast-geco.csv", "test_metrics_geco.csv"):
        with open(out / name) as f:
            tables[name] = list(csv.DictReader(f))
        assert [r["ID"] for r in tables[name]] == ["test_000", "test_001", "mean"]
    assert os.path.isdir(out / "examples") and os.path.isdir(out / "examples_geco")
    assert "after geco correction (N=1)" in capsys.readouterr().out
    for name in ("test_metrics_fast-geco.csv", "test_metrics_geco.csv"):  # an untrained corrector changes things
        assert tables[name][0]["si-snr"] != tables["test_metrics.csv"][0]["si-snr"]
    assert evaluate_main(["--model", model_dir, "--manifest", manifests["test"], "--out", str(out),
                          "--correction", "geco"]) == 2
    assert "needs --corrector" in capsys.readouterr().err


def test_recipe_yamls_load_and_the_recipe_runs(tmp_path, corpus, model_dir):
    """The four LibriMix/Custom YAMLs load; the tiny GeCo recipe runs end to end on the tiny corpus."""
    from hyperpyyaml import load_hyperpyyaml

    from nass.runner import run_correction

    root, _ = corpus
    geco_yaml = os.path.join(ROOT, "recipes/LibriMix/correction/hparams/demo/geco-tiny.yaml")
    out = tmp_path / "run"
    common = [f"--data_folder={root}", f"--separator_folder={model_dir}", f"--output_folder={out}",
              "--N_epochs=1", "--train_rows_per_epoch=2", "--batch_size=2",
              "--crop_samples=2048", "--valid_utterances=1", "--valid_steps=2", "--eval_steps=2",
              "--test_max_utterances=1", "--eval_pesq_estoi=False", "--eval_num_workers=0",
              "--n_audio_to_save=0", "--noprogressbar"]
    assert run_correction([geco_yaml] + common + ["--test_split=null"]) is None  # evaluation: see below
    assert os.path.isfile(out / "corrector" / "corrector.json")
    # issue 20: one train_log.jsonl row per validation, and the curves drawn from it
    rows = [json.loads(line) for line in open(out / "train_log.jsonl")]
    assert [r["epoch"] for r in rows] == [1] and "est_si-snr" in rows[0]["valid"]
    assert (out / "training_curves.png").read_bytes()[:4] == b"\x89PNG"
    # Fast-GeCo from that run, reusing its triplets (the cache is not rebuilt)
    triplets = out / "triplets" / "train" / "triplets.csv"
    stamp = os.stat(triplets).st_mtime_ns
    fast_yaml = os.path.join(ROOT, "recipes/LibriMix/correction/hparams/demo/fast-geco-tiny.yaml")
    fast_out = tmp_path / "fast"
    common = [c for c in common if not c.startswith(("--output_folder", "--valid_steps"))]
    results = run_correction([fast_yaml] + common + ["--test_split=test", f"--output_folder={fast_out}", f"--geco_folder={out}",
                                                     f"--triplet_folder={out / 'triplets'}"])
    assert set(results) == {"separator", "init-one-step", "fast-geco", "summary"}
    assert os.stat(triplets).st_mtime_ns == stamp
    for name in ("test_metrics.csv", "test_metrics_init-one-step.csv", "test_metrics_fast-geco.csv",
                 "correction_summary.csv"):
        assert os.path.isfile(fast_out / "test" / name), name
    names = [r["name"] for r in results["summary"]]
    assert names == ["identity (estimate unchanged)", "one step before fine-tuning", "fast-geco"]
    assert results["summary"][0]["delta"] == 0.0
    assert load_corrector(str(fast_out / "corrector")).reverse_start == 0.5
    for d in ("LibriMix", "Custom"):
        for name in ("geco.yaml", "fast-geco.yaml"):
            overrides = {"data_folder": root, "separator_folder": model_dir}
            if name == "geco.yaml":
                overrides["score_model"] = None  # the reference size is slow to build
            else:
                overrides["geco_folder"] = str(out)
            with open(os.path.join(ROOT, "recipes", d, "correction", "hparams", name)) as f:
                hp = load_hyperpyyaml(f, overrides)
            assert hp["correction_mode"] == name[:-5]
            assert hp["crop_samples"] == 16320 and hp["sample_rate"] == 8000
            assert hp["dataset"] == ("custom" if d == "Custom" else "librimix")
    for name in ("geco-tiny.yaml", "fast-geco-tiny.yaml"):  # issue 20: tiny CPU sizes for your own folder
        overrides = {"data_folder": root, "separator_folder": model_dir}
        if name.startswith("fast"):
            overrides["geco_folder"] = str(out)
        with open(os.path.join(ROOT, "recipes", "Custom", "correction", "hparams", "tiny", name)) as f:
            hp = load_hyperpyyaml(f, overrides)
        assert hp["dataset"] == "custom" and hp["valid_split"] == "dev" and hp["crop_samples"] == 8128
