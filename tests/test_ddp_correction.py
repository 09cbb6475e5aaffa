"""GeCo / Fast-GeCo recipes under ``torchrun --nproc_per_node=2`` (gloo, CPU) and under bf16.

Each DDP run launches the real recipe (``run_correction``) in two processes through a
small worker that records, outside the run folder, what each rank did: the IDs of the
training rows it was given, the final weights (SHA-256 of every tensor) and EMA, and
every file it created, wrote, renamed or removed under the run folder (Python audit
hooks: ``open`` for writing, ``os.rename`` / ``os.replace``, ``os.remove``,
``shutil.rmtree``; empty folders created with ``os.makedirs`` are not counted, since
SpeechBrain's ``Checkpointer`` constructor makes its folder on every process). Asserted: exit status 0, bit-identical weights on both ranks,
disjoint training rows, no file written by rank 1, and a resumed run that continues
(optimiser steps and epochs carry on from the checkpoint).
"""

import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from conftest import write_librimix_tree  # noqa: E402
from test_inference import write_model_folder  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO = os.path.join(ROOT, "recipes", "LibriMix", "correction", "hparams", "demo")

WORKER = textwrap.dedent(
    '''
    """Run nass.runner.run_correction and record what this rank did (test helper)."""
    import hashlib, json, os, sys

    import torch

    from nass.brains import correction as bc

    RECORD = os.environ["NASS_TEST_RECORD"]
    WATCH = os.path.abspath(os.environ["NASS_TEST_WATCH"])
    RANK = int(os.environ.get("RANK", "0"))
    writes, ids, losses, brains = [], [], [], []
    WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


    def _inside(path):
        try:
            p = os.path.abspath(os.fsdecode(path))
        except TypeError:
            return None
        return p if p == WATCH or p.startswith(WATCH + os.sep) else None


    def audit(event, args):
        if event == "open":
            path, mode, flags = args
            if isinstance(path, int):
                return
            writing = any(c in mode for c in "wax+") if isinstance(mode, str) else bool(
                isinstance(flags, int) and flags & WRITE_FLAGS)
            hit = _inside(path) if writing else None
        elif event == "os.rename":  # also os.replace
            hit = _inside(args[0]) or _inside(args[1])
        elif event in ("os.remove", "shutil.rmtree", "os.rmdir"):
            # (os.mkdir is not recorded: SpeechBrain's Checkpointer constructor, run on
            # every process when the YAML loads, creates the empty save folder)
            hit = _inside(args[0])
        else:
            return
        if hit:
            writes.append(f"{event} {hit}")


    fit_batch, fit = bc.CorrectionBrain.fit_batch, bc.CorrectionBrain.fit


    def recording_fit_batch(self, batch):
        ids.extend(batch["id"])
        loss = fit_batch(self, batch)
        losses.append(float(loss))
        return loss


    def digest(tensors):
        return [hashlib.sha256(t.detach().cpu().contiguous().numpy().tobytes()).hexdigest() for t in tensors]


    def recording_fit(self, *args, **kwargs):
        brains.append(self)
        out = fit(self, *args, **kwargs)
        # the state at the end of training (export then loads the best checkpoint)
        self.recorded = dict(optimizer_step=self.optimizer_step, ema=digest(self.ema.shadow_params),
                             params=digest(self._corrector().score_model.state_dict().values()))
        return out


    bc.CorrectionBrain.fit_batch, bc.CorrectionBrain.fit = recording_fit_batch, recording_fit
    import nass.runner  # before the audit hook: importing may write a .pyc

    sys.addaudithook(audit)
    nass.runner.run_correction(sys.argv[1:])
    brain = brains[0]
    record = dict(rank=RANK, ids=ids, losses=losses, writes=writes, wrapped=type(brain.modules.corrector).__name__,
                  exported=digest(brain._corrector().score_model.state_dict().values()), **brain.recorded)
    with open(os.path.join(RECORD, f"rank{RANK}.json"), "w") as f:
        json.dump(record, f)
    '''
)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Tiny corpus (2 mixtures of 0.5 s per split), a tiny separator and a random GeCo folder."""
    from nass.correction import BBEDSDE, GeCoModel, ScoreModel, SpecTransform, save_corrector

    base = tmp_path_factory.mktemp("ddp_correction")
    corpus = str(base / "Libri2Mix")
    write_librimix_tree(corpus, n_per_split=2, seconds=0.5)
    separator = str(base / "separator")
    write_model_folder(separator, noise=True, scores=(1.0,))
    torch.manual_seed(0)
    save_corrector(GeCoModel(BBEDSDE(), ScoreModel.tiny(), SpecTransform()), str(base / "geco" / "corrector"))
    worker = base / "worker.py"
    worker.write_text(WORKER)
    return {"base": base, "corpus": corpus, "separator": separator, "geco": str(base / "geco"),
            "worker": str(worker)}


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _common(setup, out, epochs, test, rows=4):
    return [f"--data_folder={setup['corpus']}", f"--separator_folder={setup['separator']}",
            f"--output_folder={out}", f"--N_epochs={epochs}", f"--train_rows_per_epoch={rows}", "--batch_size=1",
            "--crop_samples=2048", "--valid_utterances=1", "--eval_steps=1", "--test_max_utterances=1",
            "--eval_pesq_estoi=False", "--eval_num_workers=0", "--n_audio_to_save=0", "--noprogressbar",
            f"--test_split={'test' if test else 'null'}"]


def _geco(setup, out, epochs, test, rows=4):
    return _common(setup, out, epochs, test, rows) + ["--valid_steps=1", "--valid_si_snr_utterances=1"]


def _launch(setup, yaml, out, extra, nproc=2, name="run"):
    record = setup["base"] / f"record-{name}"
    record.mkdir()
    env = dict(os.environ, NASS_TEST_RECORD=str(record), NASS_TEST_WATCH=str(out), OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([ROOT] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--nnodes=1",
           "--master_addr=127.0.0.1", f"--master_port={_free_port()}", setup["worker"],
           os.path.join(DEMO, yaml), "--distributed_backend=gloo"] + extra
    proc = subprocess.run(cmd, env=env, cwd=str(setup["base"]), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-8000:]
    ranks = [json.loads((record / f"rank{r}.json").read_text()) for r in range(nproc)]
    return ranks, proc


def _check_ddp(ranks):
    r0, r1 = ranks
    assert r0["wrapped"] == r1["wrapped"] == "DistributedDataParallel"
    assert r0["params"] == r1["params"], "the ranks' weights differ"
    assert r0["ema"] == r1["ema"], "the ranks' moving averages differ"
    assert r0["exported"] == r1["exported"], "the ranks loaded different best checkpoints"
    assert r0["ids"] and r1["ids"] and not set(r0["ids"]) & set(r1["ids"]), (r0["ids"], r1["ids"])
    assert r1["writes"] == [], f"rank 1 wrote files: {r1['writes'][:5]}"
    assert r0["writes"], "rank 0 wrote nothing (is the audit hook working?)"
    assert all(np.isfinite(r["losses"]).all() for r in ranks)


def test_geco_trains_under_torchrun_and_resumes(setup):
    out = setup["base"] / "geco-run"
    ranks, _ = _launch(setup, "geco-tiny.yaml", out, _geco(setup, out, 1, test=False), name="geco1")
    _check_ddp(ranks)
    assert ranks[0]["optimizer_step"] == 2  # 4 rows, 2 ranks, batch 1
    assert os.path.isfile(out / "corrector" / "corrector.json")
    first = ranks[0]["params"]
    # resumed: one more epoch on the same folder continues from the checkpoint, then evaluates
    ranks, _ = _launch(setup, "geco-tiny.yaml", out, _geco(setup, out, 2, test=True), name="geco2")
    _check_ddp(ranks)
    assert ranks[0]["optimizer_step"] == 4 and len(ranks[0]["ids"]) == 2  # epoch 2 only
    assert ranks[0]["params"] != first
    log = (out / "train_log.txt").read_text()
    assert "epoch: 1" in log and "epoch: 2" in log
    assert (out / "test" / "correction_summary.csv").is_file()


def test_fast_geco_trains_under_torchrun(setup):
    out = setup["base"] / "fast-run"
    extra = _common(setup, out, 1, test=True) + [f"--geco_folder={setup['geco']}"]
    ranks, _ = _launch(setup, "fast-geco-tiny.yaml", out, extra, name="fast")
    _check_ddp(ranks)
    assert ranks[0]["optimizer_step"] == 2
    assert (out / "test" / "test_metrics_init-one-step.csv").is_file()
    assert (out / "corrector" / "corrector.ckpt").is_file()


@pytest.mark.parametrize("yaml", ["geco-tiny.yaml", "fast-geco-tiny.yaml"])
def test_bf16_training_has_finite_losses(setup, yaml, monkeypatch):
    import nass.runner
    from nass.brains import correction as bc

    losses, brains = [], []
    fit_batch, fit = bc.CorrectionBrain.fit_batch, bc.CorrectionBrain.fit

    def recording_fit_batch(self, batch):
        loss = fit_batch(self, batch)
        losses.append(float(loss))
        return loss

    def recording_fit(self, *args, **kwargs):
        brains.append(self)
        return fit(self, *args, **kwargs)

    monkeypatch.setattr(bc.CorrectionBrain, "fit_batch", recording_fit_batch)
    monkeypatch.setattr(bc.CorrectionBrain, "fit", recording_fit)
    out = setup["base"] / f"bf16-{yaml[:-5]}"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        nass.runner.run_correction([os.path.join(DEMO, yaml), "--precision=bf16", "--device=cpu"]
                                   + ([f"--geco_folder={setup['geco']}"] + _common(setup, out, 1, test=False, rows=2)
                                      if yaml.startswith("fast") else _geco(setup, out, 1, test=False, rows=2)))
    finally:
        torch.set_num_threads(threads)
    assert brains[0].precision == "bf16"
    assert len(losses) == 2 and np.isfinite(losses).all(), losses
    assert all(torch.isfinite(p).all() for p in brains[0]._corrector().parameters())
