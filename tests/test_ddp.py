"""Every separation method family trains and evaluates under ``torchrun`` (2 processes, gloo, CPU).

One launch per family of the recipe (``nass.runner.run_separation``, the body of
``recipes/*/separation/train.py``) through ``tests/ddp_probe.py``, which records what each
rank stepped on and ended with. Checked per family: exit status 0 and a test-set
evaluation; both ranks end with bit-identical parameters that training changed (so the
gradients of every module -- the PatchNCE projection head and the enhancer included --
were averaged); the ranks stepped on disjoint utterances (``DistributedSampler``); every
file in the output folder was created by rank 0. Then a resumed DDP run continues from
the checkpoint, and a launch with injected faults shows that each check can fail.

Tiny sizes (16 encoder filters, 0.25 s crops, batch 1, 2 optimiser steps per rank) keep a
launch at about 15 s on 2 busy cores.
"""

import glob
import os
import shutil
import signal
import subprocess
import sys

import pytest
import torch

from conftest import REPO

DEMO = os.path.join(REPO, "recipes", "LibriMix", "separation", "hparams", "demo")
PROBE = os.path.join(REPO, "tests", "ddp_probe.py")
#: Group id that ranks other than 0 take (see tests/ddp_probe.py); any id unused by rank 0.
OTHER_GID = 4242
TRAIN_IDS = {f"train_{i:03d}" for i in range(4)}  # tiny_librimix: 4 training mixtures

#: method family -> demo YAML (three architectures between them)
FAMILIES = {
    "baseline": "convtasnet-tiny",
    "noise-output": "dprnn-tiny-noise",
    "nass": "sepformer-tiny-nass",
    "unified": "dprnn-tiny-unified",
    "unified-gm": "sepformer-tiny-unified-gm",
    "nass-unified-gm": "dprnn-tiny-nass-unified-gm",
    "stft-noise": "dprnn-stft-tiny-noise",  # the demo model (STFT front end)
}
TINY = {
    "distributed_backend": "gloo",
    "N_epochs": 1,
    "optimizer_step_limit": 2,
    "batch_size": 1,
    "training_signal_len": 2000,  # samples: 0.25 s crops
    "eval_num_workers": 0,
    "n_audio_to_save": 1,
}


def tiny_width(yaml_name):
    """The size override that shrinks a demo YAML's model: its representation or bottleneck channels."""
    return {"N_bottleneck": 16} if "-stft-" in yaml_name else {"N_encoder_out": 16}

NCE_TINY = {"num_patches": 16, "nce_proj_dim": 16}
CAN_ATTRIBUTE = hasattr(os, "geteuid") and os.geteuid() == 0 and os.getegid() != OTHER_GID


def launch(family, data_folder, out, probe_dir, overrides=None, faults=(), timeout=300):
    """Run the recipe for ``family`` under ``torchrun --nproc_per_node=2``.

    Returns
    -------
    dict
        ``family``, ``rc``, ``log`` (stdout + stderr), ``out`` (the output folder), ``ranks``
        (``[rank0 record, rank1 record]`` from ``tests/ddp_probe.py``, None when missing),
        ``dumps`` (their paths).
    """
    os.makedirs(probe_dir, exist_ok=True)
    yaml = os.path.join(DEMO, FAMILIES[family] + ".yaml")
    options = {"data_folder": data_folder, "output_folder": out, **TINY, **tiny_width(FAMILIES[family]),
               **(NCE_TINY if "nass" in family else {}), **(overrides or {})}
    args = [yaml, *(f"--{k}={v}" for k, v in options.items()), "--noprogressbar"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", PROBE, *args]
    env = dict(os.environ, NASS_DDP_PROBE_DIR=str(probe_dir), NASS_DDP_PROBE_GID=str(OTHER_GID),
               NASS_DDP_PROBE_FAULT=",".join(faults), OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")]))
    # its own session, so that a hang is ended with every worker (not only the launcher)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            cwd=str(probe_dir), start_new_session=True)
    try:
        log, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        log, _ = proc.communicate()
        log += f"\n[test_ddp: killed after {timeout} s]"
    dumps = [os.path.join(probe_dir, f"rank{r}.pt") for r in range(2)]
    ranks = [torch.load(p, weights_only=True) if os.path.exists(p) else None for p in dumps]
    return {"family": family, "rc": proc.returncode, "log": log, "out": str(out), "ranks": ranks, "dumps": dumps}


def differing(state_a, state_b):
    """Names ``module.key`` whose tensors are not bit-identical between two ``{module: state_dict}``."""
    assert state_a.keys() == state_b.keys()
    bad = []
    for name in state_a:
        assert state_a[name].keys() == state_b[name].keys()
        bad += [f"{name}.{k}" for k, v in state_a[name].items() if not torch.equal(v, state_b[name][k])]
    return bad


def files_not_from_rank0(folder):
    """Regular files under ``folder`` whose group is not the launcher's (i.e. created by rank > 0)."""
    mine = os.getegid()
    found = []
    for root, _, files in os.walk(folder):
        found += [os.path.join(root, f) for f in files if os.stat(os.path.join(root, f)).st_gid != mine]
    return sorted(found)


def _check_ok(run):
    assert run["rc"] == 0, run["log"][-4000:]
    assert all(r is not None for r in run["ranks"]), run["log"][-4000:]


_RUNS = {}


@pytest.fixture(scope="module", params=list(FAMILIES))
def run(request, tiny_librimix, tmp_path_factory):
    """One 2-process launch per family (shared by the checks below)."""
    family = request.param
    if family not in _RUNS:
        base = tmp_path_factory.mktemp(f"ddp-{family}")
        _RUNS[family] = launch(family, tiny_librimix, base / "out", base / "probe")
    return _RUNS[family]


def test_recipe_trains_and_evaluates_under_torchrun(run):
    _check_ok(run)
    out = run["out"]
    log = open(os.path.join(out, "train_log.txt")).read()
    assert log.count("epoch: 1,") == 1, log  # one line: written by one process
    assert len(glob.glob(os.path.join(out, "save", "CKPT+*", "separator.ckpt"))) == 1
    metrics = open(os.path.join(out, "test", "test_metrics.csv")).read().splitlines()
    assert metrics[0].startswith("ID,") and any(r.startswith("mean,") for r in metrics)
    if os.path.exists(os.path.join(out, "gm_stats.csv")):  # GM: one row per optimiser step, rank 0 only
        assert len(open(os.path.join(out, "gm_stats.csv")).read().splitlines()) == 1 + 2


def test_ranks_end_with_identical_parameters_that_training_changed(run):
    _check_ok(run)
    r0, r1 = run["ranks"]
    assert differing(r0["start"], r1["start"]) == []
    assert differing(r0["end"], r1["end"]) == []
    changed = differing(r0["start"], r0["end"])
    for name in r0["end"]:  # every module trained: separator, and patch_sampler for NASS
        assert any(k.startswith(name + ".") for k in changed), f"{name} unchanged by training"
    if "unified" in run["family"]:
        assert any(k.startswith("separator.enhancer.") for k in changed)


def test_ranks_step_on_different_utterances(run):
    _check_ok(run)
    ids0, ids1 = (r["ids"] for r in run["ranks"])
    assert len(ids0) == len(ids1) == 2  # batch 1, 2 optimiser steps each
    assert not set(ids0) & set(ids1), (ids0, ids1)
    assert set(ids0) | set(ids1) <= TRAIN_IDS


@pytest.mark.skipif(not CAN_ATTRIBUTE, reason="telling the ranks' files apart needs root (setegid)")
def test_only_rank0_writes_files(run):
    _check_ok(run)
    # the attribution works: rank 1's own dump carries rank 1's group
    assert run["ranks"][1]["egid"] == OTHER_GID and os.stat(run["dumps"][1]).st_gid == OTHER_GID
    assert files_not_from_rank0(run["out"]) == []


def test_resumed_ddp_run_continues(tiny_librimix, tmp_path):
    """A second launch on the same folder starts at epoch 2 from epoch 1's parameters, on both ranks."""
    first = launch("baseline", tiny_librimix, tmp_path / "out", tmp_path / "probe1")
    _check_ok(first)
    second = launch("baseline", tiny_librimix, tmp_path / "out", tmp_path / "probe2",
                    overrides={"N_epochs": 2, "optimizer_step_limit": 4})
    _check_ok(second)
    log = open(tmp_path / "out" / "train_log.txt").read()
    assert log.count("epoch: 1,") == 1 and log.count("epoch: 2,") == 1, log
    for rank in range(2):
        assert differing(first["ranks"][rank]["end"], second["ranks"][rank]["start"]) == []
        assert len(second["ranks"][rank]["ids"]) == 2  # steps 3 and 4 only
    assert differing(second["ranks"][0]["end"], second["ranks"][1]["end"]) == []
    assert differing(second["ranks"][0]["start"], second["ranks"][0]["end"]) != []
    if CAN_ATTRIBUTE:
        assert files_not_from_rank0(tmp_path / "out") == []


def test_the_checks_catch_unsynchronised_parameters_and_writes_by_rank1(tiny_librimix, tmp_path):
    """Faults injected by the probe are caught: a method-owned module left out of DDP, a file from rank 1."""
    run = launch("nass", tiny_librimix, tmp_path / "out", tmp_path / "probe",
                 faults=["unwrap:patch_sampler", "rank1_writes"])
    _check_ok(run)
    r0, r1 = run["ranks"]
    # the projection head's gradients were not averaged: the ranks' heads drift apart (and,
    # through the clipping norm taken over all gradients, the separators too)
    assert differing(r0["start"], r1["start"]) == []
    assert any(k.startswith("patch_sampler.") for k in differing(r0["end"], r1["end"]))
    if CAN_ATTRIBUTE:
        assert files_not_from_rank0(run["out"]) == [os.path.join(run["out"], "written-by-rank1.txt")]


def test_same_data_is_caught_and_a_nan_on_one_rank_is_skipped_on_both(tiny_librimix, tmp_path):
    """Two faults in one launch: no DistributedSampler; rank 1's first loss is NaN, rank 0's is not.

    The data check sees both ranks step on the same utterances. The NaN batch is skipped
    on both ranks (before the fix only rank 1 skipped its backward pass and gloo aborted
    on the unmatched gradient all-reduce) and training goes on in step.
    """
    run = launch("baseline", tiny_librimix, tmp_path / "out", tmp_path / "probe",
                 faults=["same_data", "nonfinite_rank1"])
    _check_ok(run)
    ids0, ids1 = (r["ids"] for r in run["ranks"])
    assert ids0 == ids1 and set(ids0) & set(ids1)
    r0, r1 = run["ranks"]
    assert r0["nonfinite_count"] == r1["nonfinite_count"] == 1
    assert differing(r0["end"], r1["end"]) == []
    assert differing(r0["start"], r0["end"]) != []  # the second batch was a step
