"""Test helper: the separation recipe under ``torchrun``, with a record of what each rank did.

``tests/test_ddp.py`` launches this file instead of ``recipes/LibriMix/separation/train.py``::

    python -m torch.distributed.run --standalone --nproc_per_node=2 tests/ddp_probe.py <yaml> --key=value ...

It runs :func:`nass.runner.run_separation` -- the whole body of every
``recipes/*/separation/train.py`` -- unchanged, after installing observers on
:class:`nass.brains.separation.SeparationBrain` in this process only (the library has no
test hooks). Each rank ``r`` writes ``$NASS_DDP_PROBE_DIR/rank<r>.pt`` (a dict of tensors and
plain containers, readable with ``torch.load(..., weights_only=True)``):

``ids``
    The utterance IDs of every training batch this rank stepped on, in order.
``start``, ``end``
    ``{module name: state_dict}`` of every module in ``brain.modules`` (DDP wrapper
    removed), at the end of ``on_fit_start`` (after DDP wrapping and checkpoint recovery)
    and when ``fit`` returns (before the test-set evaluation).
``nonfinite_count``
    Batches skipped as non-finite in the last epoch.
``egid``
    The effective group id this rank ran with.

Telling the ranks' files apart: when the environment variable ``NASS_DDP_PROBE_GID`` is
set and the process may change its group (root), every rank except 0 switches its
*effective group id* to that value before anything else, so every file or folder it
creates carries that group (``st_gid``), while rank 0 keeps the launcher's group. Access
rights are unchanged (root). Files that a rank only modifies keep their group.

``NASS_DDP_PROBE_FAULT`` (comma-separated; used to show that the checks can fail):

``unwrap:<module>``
    After SpeechBrain's DDP wrapping, put the bare module back in ``brain.modules``: its
    gradients are then no longer averaged across ranks.
``same_data``
    Build the training loader as without ``torchrun`` (no ``DistributedSampler``).
``rank1_writes``
    Rank 1 writes ``<output_folder>/written-by-rank1.txt`` at the end of ``fit``.
``nonfinite_rank1``
    Rank 1's first training loss is NaN (rank 0's is finite).
"""

import os
import sys


def _state(modules):
    """``{name: state_dict clone}`` of the unwrapped modules."""
    out = {}
    for name, module in modules.items():
        base = getattr(module, "module", module)
        out[name] = {k: v.detach().clone().cpu() for k, v in base.state_dict().items()}
    return out


def install(record, faults, rank):
    """Wrap SeparationBrain's hooks to fill ``record``; apply the requested faults."""
    import speechbrain as sb

    from nass.brains.separation import SeparationBrain

    fit_batch, on_fit_start, fit = SeparationBrain.fit_batch, SeparationBrain.on_fit_start, SeparationBrain.fit
    compute_losses = SeparationBrain.compute_losses
    wrap, loader_specifics = SeparationBrain._wrap_distributed, SeparationBrain._train_loader_specifics

    def probe_fit_batch(self, batch):
        record["ids"].extend(str(i) for i in batch.id)
        return fit_batch(self, batch)

    def probe_on_fit_start(self):
        on_fit_start(self)
        record["start"] = _state(self.modules)

    def probe_fit(self, *args, **kwargs):
        result = fit(self, *args, **kwargs)
        record["end"] = _state(self.modules)
        record["nonfinite_count"] = self.nonfinite_count  # batches skipped in the last epoch
        if "rank1_writes" in faults and rank == 1:
            with open(os.path.join(self.hparams.output_folder, "written-by-rank1.txt"), "w") as f:
                f.write("fault injected by tests/ddp_probe.py\n")
        return result

    def probe_wrap(self):
        wrap(self)
        for fault in faults:
            if fault.startswith("unwrap:"):
                name = fault.split(":", 1)[1]
                self.modules[name] = self.modules[name].module

    def probe_loader_specifics(self, dataset, loader_kwargs):
        launched, self.distributed_launch = self.distributed_launch, False
        try:
            return loader_specifics(self, dataset, loader_kwargs)
        finally:
            self.distributed_launch = launched

    def probe_compute_losses(self, predictions, stage):
        losses = compute_losses(self, predictions, stage)
        if stage == sb.Stage.TRAIN and rank == 1 and not record["poisoned"]:
            record["poisoned"] = True
            losses["ss"] = losses["ss"] * float("nan")
        return losses

    SeparationBrain.fit_batch = probe_fit_batch
    SeparationBrain.on_fit_start = probe_on_fit_start
    SeparationBrain.fit = probe_fit
    SeparationBrain._wrap_distributed = probe_wrap
    if "nonfinite_rank1" in faults:
        SeparationBrain.compute_losses = probe_compute_losses
    if "same_data" in faults:
        SeparationBrain._train_loader_specifics = probe_loader_specifics


def main(argv):
    rank = int(os.environ["RANK"])
    gid = os.environ.get("NASS_DDP_PROBE_GID")
    if rank != 0 and gid and os.geteuid() == 0:
        os.setegid(int(gid))
    import speechbrain.utils.logger
    import torch

    import nass.runner

    # the environment dump (pip freeze, seconds) is irrelevant here
    speechbrain.utils.logger.get_environment_description = lambda: "(skipped in tests)\n"
    faults = [f for f in os.environ.get("NASS_DDP_PROBE_FAULT", "").split(",") if f]
    record = {"ids": [], "start": None, "end": None, "egid": os.getegid(), "poisoned": False}
    install(record, faults, rank)
    nass.runner.run_separation(argv)
    folder = os.environ["NASS_DDP_PROBE_DIR"]
    tmp = os.path.join(folder, f".rank{rank}.pt.tmp")
    torch.save(record, tmp)
    os.replace(tmp, os.path.join(folder, f"rank{rank}.pt"))


if __name__ == "__main__":
    main(sys.argv[1:])
