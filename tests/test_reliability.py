"""Training survives SIGKILL, corrupt checkpoints fall back, non-finite runs stop cleanly, nothing loaded runs code.

The end-to-end tests run the real recipe (``nass.runner.run_separation``, the body of
``recipes/LibriMix/separation/train.py``) in child processes that are killed with SIGKILL.
To keep them fast on 2 busy cores, one helper process (the "zygote", source below) imports
torch / SpeechBrain / nass once and ``fork``s a fresh child per launch; every launch gets
the same argument list, i.e. "the same command". Faults are installed in the child only
(a marker file is written, then the child sleeps inside the step / validation batch /
checkpoint write / checkpoint delete until the test kills it), so the production code
has no test hooks.
"""

import json
import os
import pathlib
import pickle
import random
import re
import signal
import subprocess
import sys
import time

import pytest
import torch
from speechbrain.utils.checkpoints import Checkpointer

from conftest import REPO
from nass.checkpoints import DELETING_PREFIX, INCOMPLETE_PREFIX, AtomicCheckpointer, CheckpointLoadError

DEMO_YAML = os.path.join(REPO, "recipes", "LibriMix", "separation", "hparams", "demo", "convtasnet-tiny.yaml")
RECOVERABLES = {"separator", "optimizer", "lr_scheduler", "counter", "brain"}
N_EPOCHS = 3

ZYGOTE = r'''
import json, os, sys, time, traceback
import speechbrain as sb
import speechbrain.utils.logger
import torch
import nass.runner
from nass.brains.separation import SeparationBrain
from nass.checkpoints import AtomicCheckpointer, DELETING_PREFIX
# the environment dump (pip freeze, ~2 s) is irrelevant here
speechbrain.utils.logger.get_environment_description = lambda: "(skipped in tests)\n"

def hang(marker):
    open(marker, "w").close()
    time.sleep(600)

def install(fault, marker):
    kind = fault["kind"]
    if kind in ("step", "valid", "nan"):
        state = {"epoch": None, "n": 0}
        start = SeparationBrain.on_stage_start
        def on_stage_start(self, stage, epoch=None):
            state["epoch"], state["n"] = epoch, 0
            return start(self, stage, epoch)
        SeparationBrain.on_stage_start = on_stage_start
    if kind == "step":
        fit = SeparationBrain.fit_batch
        def fit_batch(self, batch):
            if state["epoch"] == fault["epoch"] and state["n"] == fault["index"]:
                hang(marker)
            state["n"] += 1
            return fit(self, batch)
        SeparationBrain.fit_batch = fit_batch
    elif kind == "valid":
        ev = SeparationBrain.evaluate_batch
        def evaluate_batch(self, batch, stage):
            if stage == sb.Stage.VALID and state["epoch"] == fault["epoch"] and state["n"] == fault["index"]:
                hang(marker)
            state["n"] += 1
            return ev(self, batch, stage)
        SeparationBrain.evaluate_batch = evaluate_batch
    elif kind == "nan":  # every training batch from this epoch on has a NaN loss
        forward = SeparationBrain.compute_forward
        def compute_forward(self, batch, stage):
            out, refs = forward(self, batch, stage)
            if stage == sb.Stage.TRAIN and state["epoch"] >= fault["epoch"]:
                out.est_sources = out.est_sources * float("nan")
            return out, refs
        SeparationBrain.compute_forward = compute_forward
    elif kind == "save":  # inside the nth save of this launch, after `after_files` files
        saves = {"n": 0, "files": 0}
        save = AtomicCheckpointer.save_checkpoint
        def save_checkpoint(self, *a, **k):
            saves["n"], saves["files"] = saves["n"] + 1, 0
            return save(self, *a, **k)
        one = AtomicCheckpointer._save_recoverable
        def save_recoverable(self, name, obj, path):
            one(self, name, obj, path)
            saves["files"] += 1
            if saves["n"] == fault["nth"] and saves["files"] == fault["after_files"]:
                hang(marker)
        AtomicCheckpointer.save_checkpoint = save_checkpoint
        AtomicCheckpointer._save_recoverable = save_recoverable
    elif kind == "pause":  # inside the nth save, after `after_files` files, until <marker>.go exists
        saves = {"n": 0, "files": 0}
        save = AtomicCheckpointer.save_checkpoint
        def save_checkpoint(self, *a, **k):
            saves["n"], saves["files"] = saves["n"] + 1, 0
            return save(self, *a, **k)
        one = AtomicCheckpointer._save_recoverable
        def save_recoverable(self, name, obj, path):
            one(self, name, obj, path)
            saves["files"] += 1
            if saves["n"] == fault["nth"] and saves["files"] == fault["after_files"]:
                open(marker, "w").close()
                while not os.path.exists(marker + ".go"):
                    time.sleep(0.05)
        AtomicCheckpointer.save_checkpoint = save_checkpoint
        AtomicCheckpointer._save_recoverable = save_recoverable
    elif kind == "delete":  # in the middle of removing the first checkpoint deleted by this launch
        import shutil
        rmtree = shutil.rmtree
        def slow_rmtree(path, *a, **k):
            if os.path.basename(str(path)).startswith(DELETING_PREFIX):
                first = sorted(os.listdir(path))[0]
                os.remove(os.path.join(path, first))
                hang(marker)
            return rmtree(path, *a, **k)
        shutil.rmtree = slow_rmtree

for line in sys.stdin:
    job = json.loads(line)
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            fd = os.open(job["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            torch.set_num_threads(1)
            if job.get("fault"):
                install(job["fault"], job["marker"])
            nass.runner.run_separation(job["argv"])
        except BaseException:
            traceback.print_exc()  # as an uncaught exception: traceback, exit status 1
            code = 1
        sys.stdout.flush(); sys.stderr.flush()
        os._exit(code)
    print("@@" + json.dumps({"pid": pid}), flush=True)
    _, status = os.waitpid(pid, 0)
    print("@@" + json.dumps({"signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
                      "code": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None}), flush=True)
'''


class Zygote:
    """Launch ``run_separation(argv)`` in forked children of one pre-imported process."""

    def __init__(self, folder):
        self.folder = pathlib.Path(folder)
        script = self.folder / "zygote.py"
        script.write_text(ZYGOTE)
        self.proc = subprocess.Popen(
            [sys.executable, str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=str(folder)
        )
        self.n = 0

    def start(self, argv, fault=None):
        self.n += 1
        self.log = self.folder / f"launch{self.n}.log"
        self.marker = self.folder / f"marker{self.n}"
        job = {"argv": argv, "fault": fault, "log": str(self.log), "marker": str(self.marker)}
        self.proc.stdin.write(json.dumps(job) + "\n")
        self.proc.stdin.flush()
        self.pid = self._reply()["pid"]
        self.started = time.time()
        return self.pid

    def _reply(self):
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError("the zygote process died")
            if line.startswith("@@"):
                return json.loads(line[2:])

    def result(self):
        return self._reply()

    def wait_marker(self, timeout=240):
        """True once the child reached its fault; False if it exited first."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.marker.exists():
                return True
            if not _alive(self.pid):
                return False
            time.sleep(0.05)
        raise TimeoutError(f"launch {self.n} did not reach its fault in {timeout} s:\n{self.output()[-3000:]}")

    def kill(self):
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return self.result()

    def run(self, argv, fault=None):
        self.start(argv, fault)
        return self.result()

    def output(self):
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture(scope="module")
def zygote(tmp_path_factory):
    z = Zygote(tmp_path_factory.mktemp("zygote"))
    yield z
    z.close()


def recipe_argv(data, out, **extra):
    argv = [
        DEMO_YAML,
        f"--data_folder={data}",
        f"--output_folder={out}",
        "--training_signal_len=2000",
        "--batch_size=2",
        "--eval_num_workers=0",
        "--noprogressbar",
        f"--N_epochs={N_EPOCHS}",
        "--test_split=null",
        "--speed_perturb=null",
    ]
    return argv + [f"--{k}={v}" for k, v in extra.items()]


# ----------------------------------------------------------------------------- helpers
def checkpoints(save):
    """Visible checkpoints as (path, meta) sorted by recency, each checked complete and loadable."""
    ckpter = AtomicCheckpointer.__new__(AtomicCheckpointer)  # listing only: no clean-up on construction
    ckpter.checkpoints_dir = pathlib.Path(save)
    found = sorted(ckpter.list_checkpoints(), key=lambda c: c.meta["unixtime"])
    for ckpt in found:
        ckpter.verify(ckpt)  # sizes and CRC-32 recorded at save time
        missing = RECOVERABLES - set(ckpt.paramfiles)
        assert not missing, f"{ckpt.path} lacks {missing}"
        for name in ("separator", "optimizer", "lr_scheduler"):
            torch.load(ckpt.paramfiles[name], weights_only=True)
        int(ckpt.paramfiles["counter"].read_text())
    return found


def hidden(save):
    return sorted(p.name for p in pathlib.Path(save).iterdir() if p.name.startswith((INCOMPLETE_PREFIX, DELETING_PREFIX)))


def loaded_from(log_text):
    m = re.findall(r"Loading a checkpoint from (\S+)", log_text)
    return m[0] if m else None


def valid_si_snr_by_epoch(train_log):
    """Last logged validation SI-SNR of each epoch (the value its checkpoint was saved with)."""
    values = {}
    for line in pathlib.Path(train_log).read_text().splitlines():
        m = re.match(r"epoch: (\d+),.*valid si-snr: ([^,\s]+)", line)
        if m:
            values[int(m.group(1))] = float(m.group(2))
    return values


def check_final_bookkeeping(out):
    """Final epoch reached; kept = {last epoch, best epoch} with the meta the log reports."""
    kept = checkpoints(out / "save")
    epochs = {c.meta["epoch"] for c in kept}
    last = max(kept, key=lambda c: c.meta["unixtime"])
    assert last.meta["epoch"] == N_EPOCHS and int(last.paramfiles["counter"].read_text()) == N_EPOCHS
    logged = valid_si_snr_by_epoch(out / "train_log.txt")
    assert sorted(logged) == list(range(1, N_EPOCHS + 1))
    # each epoch logged once, also after a kill during its checkpoint save (issue 19)
    text = (out / "train_log.txt").read_text()
    assert [text.count(f"epoch: {e},") for e in logged] == [1] * N_EPOCHS, text
    jsonl_epochs = [json.loads(line)["epoch"] for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert sorted(jsonl_epochs) == list(range(1, N_EPOCHS + 1)), jsonl_epochs
    best_epoch = max(logged, key=logged.get)
    assert epochs == {N_EPOCHS, best_epoch}
    for c in kept:  # train_log prints 3 significant digits
        assert c.meta["si-snr"] == pytest.approx(logged[c.meta["epoch"]], rel=5e-3, abs=5e-3)
    assert max(kept, key=lambda c: c.meta["si-snr"]).meta["epoch"] == best_epoch
    assert not hidden(out / "save")
    return kept


# ----------------------------------------------------------------------------- 1. atomic save
class Exploding:
    """A recoverable whose save fails, as a process killed in the middle of a checkpoint."""

    def save(self, path):
        raise KeyboardInterrupt("killed while writing")

    def load(self, path, end_of_epoch):
        pass


def _partial_save(cls, folder):
    model = torch.nn.Linear(2, 2)
    ckpter = cls(folder, recoverables={"model": model, "other": Exploding()},
                 custom_save_hooks={"other": Exploding.save}, custom_load_hooks={"other": Exploding.load})
    with pytest.raises(KeyboardInterrupt):
        ckpter.save_checkpoint(meta={"si-snr": 1.0})
    return ckpter


def test_speechbrain_checkpointer_can_leave_a_partial_checkpoint(tmp_path):
    """Why nass.checkpoints exists: SpeechBrain 1.1.2 lists an interrupted save as a checkpoint."""
    ckpter = _partial_save(Checkpointer, tmp_path)
    (partial,) = ckpter.list_checkpoints()
    assert "other" not in partial.paramfiles  # listed although incomplete
    # SpeechBrain then fails without naming the file (KeyError 'other': recoverables given to its
    # constructor have no optional_recoverables entry)
    with pytest.raises((RuntimeError, KeyError)):
        ckpter.recover_if_possible()


def test_interrupted_save_is_invisible_and_cleaned_on_start(tmp_path, caplog):
    ckpter = _partial_save(AtomicCheckpointer, tmp_path)
    assert ckpter.list_checkpoints() == []
    assert len(hidden(tmp_path)) == 1
    AtomicCheckpointer(tmp_path, recoverables={"model": torch.nn.Linear(2, 2)})
    assert hidden(tmp_path) == []
    assert INCOMPLETE_PREFIX in caplog.text


def test_named_checkpoint_saved_again_is_replaced_whole(tmp_path):
    model = torch.nn.Linear(2, 2)
    ckpter = AtomicCheckpointer(tmp_path, recoverables={"model": model})
    ckpter.save_checkpoint(name="final", meta={"v": 1})
    torch.nn.init.zeros_(model.weight)
    ckpter.save_checkpoint(name="final", meta={"v": 2})
    (ckpt,) = ckpter.list_checkpoints()
    assert ckpt.meta["v"] == 2 and not hidden(tmp_path)
    assert torch.count_nonzero(torch.load(ckpt.paramfiles["model"], weights_only=True)["weight"]) == 0


# ----------------------------------------------------------------------------- 1. kill and resume
def test_sigkill_at_random_moments_then_resume_matches_uninterrupted(zygote, tiny_librimix, tmp_path):
    rng = random.Random(int(os.environ.get("NASS_KILL_SEED", "20240607")))
    seed_msg = "reproduce with NASS_KILL_SEED=" + os.environ.get("NASS_KILL_SEED", "20240607")
    # uninterrupted reference
    ref = tmp_path / "reference"
    result = zygote.run(recipe_argv(tiny_librimix, ref))
    assert result["code"] == 0, zygote.output()[-3000:]
    ref_kept = check_final_bookkeeping(ref)

    out = tmp_path / "killed"
    argv = recipe_argv(tiny_librimix, out)
    save = out / "save"
    # 4 training utterances / batch 2 = 2 steps per epoch; 4 validation utterances / batch 1
    trials = [
        {"kind": "save", "nth": 2, "after_files": rng.randint(1, 5)},  # epoch 2's checkpoint write
        {"kind": "valid", "epoch": 2, "index": rng.randint(0, 3)},
        {"kind": "delete", "nth": 1},  # while removing epoch 1's checkpoint, after epoch 2's is saved
        {"kind": "step", "epoch": 3, "index": rng.randint(0, 1)},
        {"kind": "time", "delay": rng.uniform(0.5, 8.0)},  # anywhere, wall-clock
    ]
    report = []
    for trial in trials:
        before = checkpoints(save) if save.exists() else []
        zygote.start(argv, None if trial["kind"] == "time" else trial)
        if trial["kind"] == "time":
            deadline = zygote.started + trial["delay"]
            while time.time() < deadline and _alive(zygote.pid):
                time.sleep(0.02)
            reached = _alive(zygote.pid)
        else:
            reached = zygote.wait_marker()
            assert reached, f"{trial} never happened ({seed_msg}):\n{zygote.output()[-3000:]}"
        result = zygote.kill()
        log = zygote.output()
        # resumed from the last complete checkpoint present before this launch
        expected = str(before[-1].path) if before else None
        assert loaded_from(log) == expected or (loaded_from(log) is None and trial["kind"] == "time"), (
            trial, seed_msg, log[-3000:])
        # after the kill: every visible checkpoint complete and loadable; leftovers only hidden
        after = checkpoints(save) if save.exists() else []
        leftovers = hidden(save) if save.exists() else []
        if trial["kind"] == "save":
            assert [c.meta["epoch"] for c in after] == [1] and leftovers[0].startswith(INCOMPLETE_PREFIX)
        if trial["kind"] == "delete":
            assert leftovers and leftovers[0].startswith(DELETING_PREFIX)
            assert 2 in [c.meta["epoch"] for c in after]
        report.append((trial, reached, result["signal"], [c.meta["epoch"] for c in after], leftovers))
        if result["signal"] is None:  # the wall-clock kill came after the run had finished
            assert result["code"] == 0, log[-3000:]
    # final launch with the same command runs to the end
    before = checkpoints(save)
    result = zygote.run(argv)
    assert result["code"] == 0, zygote.output()[-3000:]
    log = zygote.output()
    if before[-1].meta["epoch"] < N_EPOCHS:
        assert loaded_from(log) == str(before[-1].path), log[-3000:]
    kept = check_final_bookkeeping(out)
    # same bookkeeping as the uninterrupted run (values differ: crops and initial weights of resumed epochs)
    for run in (ref_kept, kept):
        assert 1 <= len(run) <= 2 and max(c.meta["epoch"] for c in run) == N_EPOCHS
    print("kill trials:", json.dumps(report, default=str))


# ----------------------------------------------------------------------------- 2. corrupt checkpoints
def _three_checkpoints(folder, cls=AtomicCheckpointer):
    model = torch.nn.Linear(3, 1)
    ckpter = cls(folder, recoverables={"model": model})
    saved = []
    for value in (1.0, 2.0, 3.0):
        torch.nn.init.constant_(model.weight, value)
        saved.append(ckpter.save_checkpoint(meta={"si-snr": value}))
        time.sleep(0.01)
    return ckpter, model, saved


@pytest.mark.parametrize("damage", ["truncate", "garble", "delete", "meta"])
def test_damaged_latest_checkpoint_falls_back_to_previous(tmp_path, caplog, damage):
    ckpter, model, saved = _three_checkpoints(tmp_path)
    bad = saved[-1].paramfiles["model"]
    if damage == "truncate":
        bad.write_bytes(bad.read_bytes()[:100])
    elif damage == "garble":
        data = bytearray(bad.read_bytes())
        data[len(data) // 2] ^= 0xFF
        bad.write_bytes(bytes(data))
    elif damage == "delete":
        bad.unlink()
    else:
        bad = saved[-1].path / "CKPT.yaml"
        bad.write_text("{{{ not yaml")
    torch.nn.init.zeros_(model.weight)
    got = ckpter.recover_if_possible()
    assert got.path == saved[1].path and model.weight.detach()[0, 0].item() == 2.0
    assert str(bad) in caplog.text
    # the best-by-SI-SNR choice falls back the same way (evaluation of the best checkpoint)
    assert ckpter.recover_if_possible(max_key="si-snr").path == saved[1].path


def test_every_checkpoint_damaged_raises_listing_all(tmp_path):
    ckpter, _, saved = _three_checkpoints(tmp_path)
    for ckpt in saved:
        ckpt.paramfiles["model"].write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(CheckpointLoadError) as err:
        ckpter.recover_if_possible()
    for ckpt in saved:
        assert str(ckpt.paramfiles["model"]) in str(err.value)
    assert "Move them away" in str(err.value)


def test_truncated_file_in_speechbrain_written_checkpoint_is_named(tmp_path, caplog):
    """Checkpoints written by SpeechBrain's class (no sizes in the meta) are still caught at load."""
    _, _, saved = _three_checkpoints(tmp_path, cls=Checkpointer)
    bad = saved[-1].paramfiles["model"]
    bad.write_bytes(bad.read_bytes()[:200])
    model = torch.nn.Linear(3, 1)
    got = AtomicCheckpointer(tmp_path, recoverables={"model": model}).recover_if_possible()
    assert got.path == saved[1].path and model.weight.detach()[0, 0].item() == 2.0
    assert f"{bad}: cannot be loaded" in caplog.text


def test_load_separator_names_a_corrupt_separator_ckpt(tmp_path):
    from nass.inference import ModelLoadError, load_separator

    folder = tmp_path / "model"
    ckpt = folder / "save" / "CKPT+x"
    ckpt.mkdir(parents=True)
    (folder / "hyperparams.yaml").write_text("sample_rate: 8000\nseparator: !new:torch.nn.Linear [2, 2]\n")
    torch.save(torch.nn.Linear(2, 2).state_dict(), ckpt / "separator.ckpt")
    data = (ckpt / "separator.ckpt").read_bytes()
    (ckpt / "separator.ckpt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match=re.escape(str(ckpt / "separator.ckpt")) + ".*truncated"):
        load_separator(str(folder))


# ----------------------------------------------------------------------------- 6. pickles that run code
class Payload:
    """Unpickling this creates a folder: stands for arbitrary code."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (os.mkdir, (self.target,))


def test_resume_refuses_a_pickle_that_runs_code(tmp_path, monkeypatch, caplog):
    # make torch's default unsafe, as an older torch or this variable would: SpeechBrain's
    # hooks call torch.load without weights_only and would then run the payload
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    sb_dir, ours_dir = tmp_path / "sb", tmp_path / "ours"
    for folder in (sb_dir, ours_dir):
        ckpter, _, saved = _three_checkpoints(folder, cls=Checkpointer)
        with open(saved[-1].paramfiles["model"], "wb") as f:
            pickle.dump({"weight": Payload(str(folder / "PWNED"))}, f, protocol=2)
    with pytest.raises(Exception):
        Checkpointer(sb_dir, recoverables={"model": torch.nn.Linear(3, 1)}).recover_if_possible()
    assert (sb_dir / "PWNED").exists()  # SpeechBrain's own path ran the code
    model = torch.nn.Linear(3, 1)
    got = AtomicCheckpointer(ours_dir, recoverables={"model": model}).recover_if_possible()
    assert not (ours_dir / "PWNED").exists()
    assert "refused to load" in caplog.text and "model.ckpt" in caplog.text
    assert got.meta["si-snr"] == 2.0 and model.weight.detach()[0, 0].item() == 2.0


def test_load_separator_refuses_a_pickle_that_runs_code(tmp_path, monkeypatch):
    from nass.inference import ModelLoadError, load_separator

    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "hyperparams.yaml").write_text("sample_rate: 8000\nseparator: !new:torch.nn.Linear [2, 2]\n")
    with open(folder / "separator.ckpt", "wb") as f:
        pickle.dump({"weight": Payload(str(tmp_path / "PWNED"))}, f, protocol=2)
    with pytest.raises(ModelLoadError, match="refused to load"):
        load_separator(str(folder))
    assert not (tmp_path / "PWNED").exists()


# ----------------------------------------------------------------------------- 3. non-finite losses
def test_nonfinite_run_stops_and_keeps_last_good_checkpoint(zygote, tiny_librimix, tmp_path):
    out = tmp_path / "nan"
    result = zygote.run(recipe_argv(tiny_librimix, out, nonfinite_patience=1), {"kind": "nan", "epoch": 2})
    log = zygote.output()
    assert result["code"] == 1, log[-3000:]
    assert "batches with a non-finite loss this epoch (patience 1); stopping" in log
    assert re.search(r"non-finite loss: batch skipped .*utterances: train_\d{3}, train_\d{3}", log)
    (ckpt,) = checkpoints(out / "save")  # epoch 1's, complete and loadable
    assert ckpt.meta["epoch"] == 1 and not hidden(out / "save")
    assert "epoch: 2" not in (out / "train_log.txt").read_text()


# ----------------------------------------------------------------------------- 4. unwritable output
def test_unwritable_output_folder_fails_before_training(zygote, tiny_librimix, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    out = blocker / "out"  # below a regular file: cannot be created, even by root
    result = zygote.run(recipe_argv(tiny_librimix, out))
    log = zygote.output()
    assert result["code"] == 1
    # the YAML's checkpointer is the first to create the folder: it reports it (no traceback from
    # the recipe: SystemExit with the message)
    assert f"checkpoint folder {str(out / 'save')!r} cannot be created (Not a directory)" in log
    assert "--output_folder=" in log and "SystemExit" in log
    assert "Going into epoch" not in log and "Beginning experiment" not in log


def test_full_disk_is_reported_by_check_writable(tmp_path, monkeypatch):
    import errno

    from nass.runner import check_writable

    def full(fd, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "write", full)
    with pytest.raises(OSError, match="No space left on device.*Free disk space"):
        check_writable(str(tmp_path / "o"))
    monkeypatch.undo()
    assert os.listdir(tmp_path / "o") == []  # the probe file is removed


# ----------------------------------------------------------------------------- 6. read while training (issue 19)
def test_separating_while_a_training_saves_leaves_it_unharmed(zygote, tiny_librimix, tmp_path):
    """A training paused inside its epoch-2 checkpoint write (a hidden .incomplete-CKPT+* with
    2 files); meanwhile nass-separate and nass-evaluate read the folder (its epoch-1 checkpoint);
    then the training continues and finishes as if nothing happened. Before issue 19 the reading
    built the training checkpointer, which deleted the hidden folder and crashed the save."""
    import numpy as np

    from nass.cli import evaluate_main, separate_main
    from nass.dataio.audio import write_audio

    out = tmp_path / "run"
    zygote.start(recipe_argv(tiny_librimix, out), fault={"kind": "pause", "nth": 2, "after_files": 2})
    try:
        assert zygote.wait_marker(), zygote.output()[-3000:]
        pending = hidden(out / "save")
        assert len(pending) == 1 and pending[0].startswith(INCOMPLETE_PREFIX)
        files = sorted(os.listdir(out / "save" / pending[0]))
        assert len(files) == 2
        wav = str(tmp_path / "x.wav")
        write_audio(wav, np.random.default_rng(0).uniform(-0.3, 0.3, 4000).astype("float32"), 8000)
        assert separate_main([wav, "--model", str(out), "--out", str(tmp_path / "sep")]) == 0
        manifest = next(str(p) for p in (out / "save").glob("*dev.csv"))
        assert evaluate_main(["--model", str(out), "--manifest", manifest, "--out", str(tmp_path / "eval"),
                              "--num_workers", "0", "--save_examples", "0"]) == 0
        assert sorted(os.listdir(out / "save" / pending[0])) == files  # untouched
    finally:
        open(str(zygote.marker) + ".go", "w").close()
    result = zygote.result()
    assert result["code"] == 0, zygote.output()[-3000:]
    kept = checkpoints(out / "save")
    assert max(c.meta["epoch"] for c in kept) == N_EPOCHS and not hidden(out / "save")
    assert sorted(os.listdir(out / "model")) == ["hyperparams.yaml", "model_card.json", "separator.ckpt"]
