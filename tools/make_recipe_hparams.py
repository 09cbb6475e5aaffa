#!/usr/bin/env python3
"""Write every recipe YAML from one table of datasets x models x methods.

The YAML files under ``recipes/*/separation/hparams/`` are ordinary HyperPyYAML files
that researchers read and edit; this script only keeps the ~70 variants consistent.
``tests/test_hparams.py`` fails when a committed file differs from what this script
writes, so after editing the table run::

    python tools/make_recipe_hparams.py

Model architectures live once in ``hparams/models/*.yaml``; this script copies them into
every recipe YAML (sizes as top-level keys, objects under ``model:``), so a recipe YAML is
self-contained: copied anywhere it still loads, and every model size is a ``--key=value``
override (issue 20; a relative ``!include`` broke on a copied file).
"""

import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# ----------------------------------------------------------------------------- datasets
DATASETS = {
    "libri2mix": dict(
        folder="recipes/LibriMix/separation/hparams/libri2mix",
        title="Libri2Mix (noisy, 8 kHz, min)",
        dataset="librimix",
        data_folder="!PLACEHOLDER  # e.g. /data/Libri2Mix",
        num_spks=2,
        splits=("train-360", "dev", "test"),
        nass_splits=("train-100", "dev", "test"),
    ),
    "libri3mix": dict(
        folder="recipes/LibriMix/separation/hparams/libri3mix",
        title="Libri3Mix (noisy, 8 kHz, min)",
        dataset="librimix",
        data_folder="!PLACEHOLDER  # e.g. /data/Libri3Mix",
        num_spks=3,
        splits=("train-360", "dev", "test"),
        nass_splits=("train-100", "dev", "test"),
    ),
    "wham": dict(
        folder="recipes/WHAM/separation/hparams",
        title="WHAM! (8 kHz, min)",
        dataset="wham",
        data_folder="!PLACEHOLDER  # e.g. /data/wham (holds wav8k/min/{tr,cv,tt})",
        num_spks=2,
        splits=("tr", "cv", "tt"),
        nass_splits=("tr", "cv", "tt"),
    ),
    "custom": dict(
        folder="recipes/Custom/separation/hparams",
        title="a custom Libri2Mix-shaped folder (<split>/mix_both, s1, s2, noise[, mix_clean])",
        dataset="custom",
        data_folder="!PLACEHOLDER  # e.g. mycorpus/Libri2Mix (tools/create_mixtures.py --out) or <root>/wav8k/min",
        num_spks=2,
        splits=("train", "dev", "test"),  # the split names tools/create_mixtures.py writes
        nass_splits=("train", "dev", "test"),
    ),
    "custom-tiny": dict(
        folder="recipes/Custom/separation/hparams/tiny",
        title="a custom Libri2Mix-shaped folder (tools/create_mixtures.py --out, or its wav8k/min), TINY CPU model",
        dataset="custom",
        data_folder="!PLACEHOLDER  # e.g. mycorpus/Libri2Mix (tools/create_mixtures.py --out)",
        num_spks=2,
        splits=("train", "dev", "test"),
        nass_splits=("train", "dev", "test"),
        tiny=True,
    ),
    "demo": dict(
        folder="recipes/LibriMix/separation/hparams/demo",
        title="the demo corpus (tools/build_demo_corpus.py; Libri2Mix-shaped, real Debian recordings), TINY CPU model",
        dataset="librimix",
        data_folder="data/demo/Libri2Mix",
        num_spks=2,
        splits=("train", "dev", "test"),
        nass_splits=("train", "dev", "test"),
        tiny=True,
    ),
}

# ----------------------------------------------------------------------------- models
MODELS = {
    "sepformer": dict(fragment="sepformer.yaml", enhancer="enhancer-sepformer.yaml"),
    "dprnn": dict(fragment="dprnn.yaml", enhancer="enhancer-dprnn.yaml"),
    "convtasnet": dict(fragment="convtasnet.yaml", enhancer=None),
}

# Tiny CPU sizes (demo corpus, tests): a few minutes of CPU training learn something.
TINY = {
    "sepformer": dict(N_encoder_out=64, num_layers=1, num_blocks=2, nhead=4, d_ffn=128, K=100),
    "dprnn": dict(N_encoder_out=64, hidden_channels=64, num_blocks=2, K=100, kernel_size=32),  # issue 21: h64 + stride 16 learnt faster per CPU second than h32 + stride 8
    "convtasnet": dict(N_encoder_out=64, B=32, H=64, P=3, X=4, R=1),
}
# Tiny models train for a fixed step budget with warm-up + linear decay (issue 21's
# learning curves); peak rates measured on the demo corpus (bench/learning_curve.py)
TINY_STEPS = 1800  # about 11.5 minutes of training (validation included) on 2 idle cores: 0.36 s per step
TINY_LR = {"sepformer": 0.001, "dprnn": 0.003, "convtasnet": 0.001}
TINY_LR_NOTE = {
    "sepformer": "not tuned",
    "dprnn": "3e-3 learnt faster than 1e-3 on the demo corpus",
    "convtasnet": "not tuned",
}
# Custom fine-tuning YAMLs (``<model>-tiny<method>-finetune.yaml`` in the custom-tiny folder):
# the architecture of the demo model (tools/run_demo.py), a tenth of its peak rate and a
# short budget; every other YAML fine-tunes too with --init_from (and --lr, --freeze_encoder)
FINETUNE = [("dprnn", "-noise")]
FINETUNE_LR_FACTOR = 0.1
FINETUNE_STEPS = 400
FULL_N = {"sepformer": 256, "dprnn": 256, "convtasnet": 512}
TINY_ENHANCER = {
    "sepformer": dict(N_encoder_out=64, num_layers=1, num_blocks=1, nhead=4, d_ffn=128, K=100),
    "dprnn": dict(N_encoder_out=64, hidden_channels=32, num_blocks=1, K=100),
}

# ----------------------------------------------------------------------------- methods
# noise: NASS noise output; nce: PatchNCE; front: unified SE front-end; gm: gradient modulation
METHODS = {
    "": dict(noise=False, nce=False, front=False, gm=False, title="baseline (speakers only)"),
    "-noise": dict(noise=True, nce=False, front=False, gm=False, title="noise as an extra output (NASS, no PatchNCE)"),
    "-nass": dict(noise=True, nce=True, front=False, gm=False, title="NASS: noise output + PatchNCE"),
    "-unified": dict(noise=False, nce=False, front=True, gm=False, title="unified SE+SS (no gradient modulation)"),
    "-unified-gm": dict(noise=False, nce=False, front=True, gm=True, title="unified SE+SS with gradient modulation"),
    "-nass-unified-gm": dict(
        noise=True, nce=True, front=True, gm=True, title="NASS (noise output + PatchNCE) + unified SE+SS with GM"
    ),
}
MODEL_METHODS = {
    "sepformer": list(METHODS),
    "dprnn": list(METHODS),
    "convtasnet": ["", "-noise"],
}


# ----------------------------------------------------------------------------- fragments
OBJECT_TAGS = ("!new:", "!name:", "!apply:")


def read_fragment(name):
    """A model fragment of ``hparams/models/`` as ``(header, sizes, objects)``.

    ``header``: its leading comment lines; ``sizes``: ``[(key, value, comment)]`` of the
    top-level scalar keys (``num_masks`` left out: the recipe defines it); ``objects``:
    ``[(key, [lines])]`` of the top-level objects (tag line and indented body).
    """
    import re

    header, sizes, objects = [], [], []
    lines = open(os.path.join(ROOT, "hparams", "models", name), encoding="utf-8").read().splitlines()
    for line in lines:
        if not line.strip():
            continue
        if line.startswith("#") and not sizes and not objects:
            header.append(line)
            continue
        if line.startswith((" ", "\t")):
            objects[-1][1].append(line)
            continue
        m = re.match(r"^(\w+):\s*(.*?)\s*(#.*)?$", line)
        if m is None:
            raise ValueError(f"hparams/models/{name}: cannot read line {line!r}")
        key, value, comment = m.group(1), m.group(2), (m.group(3) or "")
        if value.startswith(OBJECT_TAGS):
            objects.append((key, [line]))
        elif key != "num_masks":
            sizes.append((key, value, comment))
    return header, sizes, objects


def inline_fragment(name, mapping, values, prefix="", shared=()):
    """Recipe lines for a fragment: its sizes as top-level keys, its objects under ``mapping:``.

    Parameters
    ----------
    name : str
        Fragment file in ``hparams/models/``.
    mapping : str
        The recipe key holding the objects (``model``, ``enhancer_model``).
    values : dict
        Sizes that differ from the fragment's defaults (the TINY tables).
    prefix : str
        Prepended to the size keys (``enhancer_``), except those in ``shared``.
    shared : sequence of str
        Size keys defined elsewhere in the recipe (``N_encoder_out`` of the enhancer).
    """
    import re

    header, sizes, objects = read_fragment(name)
    out = [f"# architecture copied from hparams/models/{name} by tools/make_recipe_hparams.py:"]
    out += header
    names = {key: (key if key in shared else prefix + key) for key, _, _ in sizes}
    for key, value, comment in sizes:
        if key in shared:
            continue
        line = f"{names[key]}: {values.get(key, value)}"
        out.append(f"{line.ljust(33)} {comment}".rstrip() if comment else line)
    obj_names = {key for key, _ in objects}

    def ref(match):
        key = match.group(1)
        if key in obj_names:
            return f"<{mapping}[{key}]>"
        return f"<{names.get(key, key)}>"

    out.append(f"{mapping}:")
    for _, body in objects:
        for line in body:
            out.append("    " + re.sub(r"<(\w+)>", ref, line))
    return out


def loss_term_lines(m):
    """The ``backward`` rule and the ``loss_terms`` list of a method (:mod:`nass.losses.terms`);
    the weights are the method keys written above (``noise_loss_weight``, ``lambda_nce``,
    ``se_loss_weight``), so ``--key=value`` overrides keep working."""
    out = ["# ---- loss: the terms the Brain sums (nass.losses.terms), in order; weights from the keys above"]
    rule = "gradient_modulation" if m["gm"] else "plain"
    out.append(f"backward: {rule}".ljust(33) + " # plain | gradient_modulation (GM paper: g_SE projected when it conflicts with g_SS)")
    out.append("loss_terms:")
    out.append("    - !new:nass.losses.terms.SpeakerPIT   # speakers, PIT negative SI-SNR")
    if m["noise"]:
        out.append("    - !new:nass.losses.terms.NoiseSISNR   # NASS noise output, negative SI-SNR")
        out.append("        weight: !ref <noise_loss_weight>")
    if m["nce"]:
        out.append("    - !new:nass.losses.terms.PatchNCE     # NASS contrastive term (training only)")
        out.append("        weight: !ref <lambda_nce>")
        out.append("        sampler: !ref <patch_sampler>")
        out.append("        criterion: !ref <patch_nce>")
    if m["front"]:
        out.append("    - !new:nass.losses.terms.Enhancement  # unified SE+SS: enhanced_w vs Encoder(mix_clean)")
        out.append("        weight: !ref <se_loss_weight>")
        out.append("        loss_type: !ref <se_loss_type>")
    return out


def render(ds_key, model, method, finetune=False):
    ds, m = DATASETS[ds_key], METHODS[method]
    tiny = ds.get("tiny", False)
    name = f"{model}{'-tiny' if tiny else ''}{method}{'-finetune' if finetune else ''}"
    splits = ds["nass_splits"] if m["nce"] or (m["noise"] and not m["front"]) else ds["splits"]
    train_split, valid_split, test_split = splits
    L = []
    add = L.append
    add("# " + "#" * 78)
    add(f"# Generated by tools/make_recipe_hparams.py: edit the table there, then re-run it.")
    add(f"# Model: {model}{' (TINY CPU size)' if tiny else ''}; method: {m['title']}")
    add(f"# Data: {ds['title']}")
    add("# Run:   python recipes/<Dataset>/separation/train.py <this file> --data_folder=<path>")
    if finetune:
        add("# Fine-tuning: --init_from=<trained model or training folder> (matching weights are copied,")
        add("# the rest is reported by name; fresh optimiser and schedule; resume works as usual)")
    add("# HyperPyYAML executes the Python objects it names: only run YAML files you trust.")
    add("# " + "#" * 78)
    add("")
    add("seed: 1234")
    add("__set_seed: !apply:torch.manual_seed [!ref <seed>]")
    add("")
    add("# ---- data")
    add(f"dataset: {ds['dataset']}                 # librimix | wham | custom (explicit, never guessed)")
    add(f"data_folder: {ds['data_folder']}")
    add("sample_rate: 8000                 # Hz; NASS / GM / GeCo papers all use 8 kHz")
    add(f"num_spks: {ds['num_spks']}")
    add("mode: min                         # LibriMix / WHAM! min or max")
    add("mixture: noisy                    # noisy (mix_both) | clean (mix_clean) input")
    if m["nce"] or (m["noise"] and not m["front"]):
        comment = "# NASS paper: Libri2Mix train-100" if ds_key.startswith("libri") else ""
    elif m["front"]:
        comment = "# GM paper: Libri2Mix train-360" if ds_key.startswith("libri") else ""
    else:
        comment = "# SpeechBrain LibriMix recipe: train-360" if ds_key.startswith("libri") else ""
    add(f"train_split: {train_split}          {comment}".rstrip())
    add(f"valid_split: {valid_split}")
    add(f"test_split: {test_split}")
    add(f"experiment_name: {name}")
    add(f"output_folder: !ref results/<experiment_name>/<seed>")
    add("save_folder: !ref <output_folder>/save")
    add("train_log: !ref <output_folder>/train_log.txt")
    add("skip_prep: False")
    add("")
    add("# ---- training")
    nass_family = m["noise"] or m["nce"]
    S = ds["num_spks"]
    if tiny:
        if ds_key == "custom-tiny":
            add("N_epochs: 1000                    # the step budget (optimizer_step_limit) ends the run, whatever the folder's size")
        else:
            add("N_epochs: 20")
        add("batch_size: 4")
        if finetune:
            add(f"lr: {TINY_LR[model] * FINETUNE_LR_FACTOR:.4g}                        # fine-tuning: a tenth of the from-scratch peak ({TINY_LR[model]})")
        else:
            add(f"lr: {TINY_LR[model]}                         # peak of the warm-up + linear decay below ({TINY_LR_NOTE[model]})")
        add("training_signal_len: 24000        # samples: 3 s random crops")
        add("valid_signal_len: 0               # whole utterances")
        add("valid_max_utterances: 100         # validate on 100 dev mixtures spread over the split (null: all)")
        steps = FINETUNE_STEPS if finetune else TINY_STEPS
        add(f"optimizer_step_limit: {steps}         # the budget; the schedule decays to 0 here (--optimizer_step_limit=N moves both)")
    else:
        if m["front"]:
            add("N_epochs: 120                     # GM paper and reference yaml: 120 epochs")
        else:
            add("N_epochs: 200                     # NASS paper: 200 epochs")
        add("batch_size: 1                     # both papers")
        add("lr: 0.00015                       # Adam 1.5e-4 (SepFormer, NASS, GM papers)")
        if m["front"]:
            add("training_signal_len: 0           # GM paper: full utterances")
        else:
            add("training_signal_len: 32000       # samples: 4 s random crops at 8 kHz (NASS paper)")
        add("valid_signal_len: 0")
        add("valid_max_utterances: null        # validate on every dev mixture (the papers)")
    add("max_grad_norm: 5                  # gradient clipping (SpeechBrain SepFormer recipe)")
    if finetune:
        add("init_from: !PLACEHOLDER           # trained model or training folder (e.g. results/demo)")
        add("freeze_encoder: False             # True: keep the pretrained encoder fixed")
    else:
        add("init_from: null                   # fine-tune: a trained model or training folder; matching weights start the run")
        add("freeze_encoder: False             # True: the encoder's weights stay fixed (fine-tuning)")
    add("tensorboard: False                # True: event files in <output_folder>/tensorboard (pip install 'nass[tensorboard]')")
    add("plot_training_curves: True        # <output_folder>/training_curves.png from train_log.jsonl at every validation")
    if tiny:
        add("precision: auto                   # auto: bf16 on CPUs with AVX512-BF16/AMX and bf16 GPUs, else fp32 (logged)")
    else:
        add("precision: fp32                   # fp32 | fp16 | bf16 | auto (GM paper: fp32)")
    add("nonfinite_patience: 3             # batches with NaN/Inf loss skipped per epoch before stopping")
    add("ckpt_interval_minutes: 0          # > 0 also saves mid-epoch checkpoints")
    add(f"log_interval_steps: {50 if tiny else 500}            # running loss terms to train_log.jsonl every N optimiser steps (0: off)")
    add("threshold_byloss: True            # drop utterances already better than `threshold` dB")
    add("threshold: -30")
    add("dynamic_mixing: False             # LibriMix-style on-the-fly remixing of the training set")
    add("noprogressbar: False")
    add("eval_num_workers: 2               # processes for mir_eval SDR at test time")
    add("eval_pesq_estoi: False")
    if tiny:
        add("eval_sdr_backend: fast_bss_eval   # same SDR as mir_eval (tested), several times faster")
    else:
        add("eval_sdr_backend: mir_eval        # the papers' SDR; fast_bss_eval gives the same values faster")
    add("n_audio_to_save: 5                # separated test examples written as WAV")
    add("eval_folder: !ref <output_folder>/test   # per-utterance test metrics, means and separated examples")
    add("")
    add("# Speed perturbation of every source, each its own speed (resampling: pitch and")
    add("# formants move with the speed). [95, 100, 105] is SpeechBrain's SepFormer recipe; a wider set,")
    add("# e.g. --speed_perturb_speeds=[85,90,95,100,105,110,115], makes on-the-fly pseudo-speakers")
    add("# (one reader -> several apparent voices; docs/demo_corpus.md). --speed_perturb=null: off.")
    add("speed_perturb_speeds: [95, 100, 105]   # percent")
    add("speed_perturb_noise: False        # references perturb the sources only; True: the noise too (our option)")
    add("speed_perturb: !new:speechbrain.augment.time_domain.SpeedPerturb")
    add("    orig_freq: !ref <sample_rate>")
    add("    speeds: !ref <speed_perturb_speeds>")
    add("")
    add("# ---- method")
    add(f"noise_target: {'extra_output' if m['noise'] else 'none'}             # none | extra_output (NASS noise output)")
    if nass_family:
        # the NASS reference averages PIT over speakers + noise: relative to the speakers'
        # mean the noise weighs 1/num_spks and PatchNCE lambda_NCE * (S + 1) / S
        add(f"noise_loss_weight: !ref 1 / <num_spks>   # = {1 / S:.4g}; NASS reference: PIT mean over speakers + noise")
    else:
        add("noise_loss_weight: 1.0           # weight of the noise estimate's negative SI-SNR (unused: no noise output)")
    if m["front"]:
        add("se_loss_weight: 0.1              # GM paper: SE loss weight 0.1")
        add("se_loss_type: mse                # mse (paper: sum of squares to Encoder(mix_clean)) | neg_snr (scale-invariant)")
    if m["nce"]:
        lam = 2.0 * (S + 1) / S
        add(f"lambda_nce: !ref 2 * (<num_spks> + 1) / <num_spks>   # = {lam:.4g}: paper lambda_NCE = 2 rescaled as the reference's PIT mean")
        add("patch_layout: frame              # frame (a frame's N-vector; learns) | cell (NASS reference PatchSampleF; stays at chance)")
        add("nce_temperature: 0.07            # NASS reference (patchnce.py)")
        add("num_patches: 256                 # K patch positions (NASS reference)")
        add("nce_proj_dim: 256                # projection size (NASS reference PatchSampleF)")
    if m["front"] and m["noise"]:
        add("noise_input: enhanced            # enhanced (noise mask on enhanced_w) | mixture (on mix_w, before the enhancer)")
    add("num_masks: " + ("!ref <num_spks> + 1   # speakers + noise" if m["noise"] else "!ref <num_spks>"))
    add("")
    add("# ---- model: every size below is a top-level key (--num_layers=1, --kernel_size=8, ...)")
    sizes = dict(TINY[model]) if tiny else {"N_encoder_out": FULL_N[model]}
    for line in inline_fragment(MODELS[model]["fragment"], "model", sizes):
        add(line)
    if m["front"]:
        esizes = {k: v for k, v in (TINY_ENHANCER[model] if tiny else {}).items() if k != "N_encoder_out"}
        add("")
        for line in inline_fragment(
            MODELS[model]["enhancer"], "enhancer_model", esizes, prefix="enhancer_", shared=("N_encoder_out",)
        ):
            add(line)
    add("")
    add("separator: !new:nass.separation.MaskingSeparator")
    add("    encoder: !ref <model[encoder]>")
    add("    masknet: !ref <model[masknet]>")
    add("    decoder: !ref <model[decoder]>")
    add("    num_spks: !ref <num_spks>")
    add("    noise_target: !ref <noise_target>")
    if m["front"]:
        add("    enhancer: !ref <enhancer_model[enhancer]>")
        if m["noise"]:
            add("    noise_input: !ref <noise_input>")
    add("")
    if m["nce"]:
        add("patch_sampler: !new:nass.losses.patch_nce.PatchSampler")
        add("    in_channels: !ref <N_encoder_out>")
        add("    proj_dim: !ref <nce_proj_dim>")
        add("    num_patches: !ref <num_patches>")
        add("    patch_layout: !ref <patch_layout>")
        add("patch_nce: !new:nass.losses.patch_nce.PatchNCELoss")
        add("    temperature: !ref <nce_temperature>")
        add("")
    for line in loss_term_lines(m):
        add(line)
    add("")
    add("modules:")
    add("    separator: !ref <separator>")
    if m["nce"]:
        add("    patch_sampler: !ref <patch_sampler>   # trained and checkpointed, unused at inference")
    add("")
    add("optimizer: !name:torch.optim.Adam")
    add("    lr: !ref <lr>")
    add("    weight_decay: 0")
    add("")
    if tiny:
        add("# short CPU budgets: linear warm-up to <lr>, then linear decay to 0 at the step budget")
        add("# (bench/learning_curve.py, docs/results.md 'Learning curves'); updated after every step")
        add("lr_scheduler: !new:nass.schedulers.BudgetLinearWarmupScheduler   # SpeechBrain LinearWarmupScheduler; resumes with a new budget")
        add("    initial_value: !ref <lr>")
        add("    num_warmup_steps: !ref <optimizer_step_limit> // 20   # 5 % of the budget")
        add("    num_training_steps: !ref <optimizer_step_limit>")
    else:
        add("lr_scheduler: !new:speechbrain.nnet.schedulers.ReduceLROnPlateau  # SepFormer LibriMix recipe")
        add("    factor: 0.5")
        add("    patience: 2")
        if nass_family:
            add("    dont_halve_until_epoch: 50    # NASS reference yaml")
        else:
            add("    dont_halve_until_epoch: 5     # SpeechBrain LibriMix / GM reference yaml")
    add("")
    add("epoch_counter: !new:speechbrain.utils.epoch_loop.EpochCounter")
    add("    limit: !ref <N_epochs>")
    add("")
    add("dataloader_opts:")
    add("    batch_size: !ref <batch_size>")
    add("    num_workers: 0")
    add("    shuffle: True")
    add("valid_dataloader_opts:")
    add("    batch_size: 1")
    add("")
    add("checkpointer: !new:nass.checkpoints.AtomicCheckpointer")
    add("    checkpoints_dir: !ref <save_folder>")
    add("    recoverables:")
    add("        separator: !ref <separator>")
    if m["nce"]:
        add("        patch_sampler: !ref <patch_sampler>")
    add("        lr_scheduler: !ref <lr_scheduler>")
    add("        counter: !ref <epoch_counter>")
    add("")
    add("train_logger: !new:speechbrain.utils.train_logger.FileTrainLogger")
    add("    save_file: !ref <train_log>")
    return name, "\n".join(L) + "\n"


def all_files():
    """``{relative path: text}`` of every recipe YAML."""
    out = {}
    for ds_key, ds in DATASETS.items():
        for model, methods in MODEL_METHODS.items():
            for method in methods:
                name, text = render(ds_key, model, method)
                out[os.path.join(ds["folder"], name + ".yaml")] = text
    for model, method in FINETUNE:
        name, text = render("custom-tiny", model, method, finetune=True)
        out[os.path.join(DATASETS["custom-tiny"]["folder"], name + ".yaml")] = text
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="exit 1 if a committed file is out of date")
    args = parser.parse_args(argv)
    stale = []
    for rel, text in all_files().items():
        path = os.path.join(ROOT, rel)
        current = open(path, encoding="utf-8").read() if os.path.exists(path) else None
        if current != text:
            stale.append(rel)
            if not args.check:
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with open(path + ".tmp", "w", encoding="utf-8") as f:
                    f.write(text)
                os.replace(path + ".tmp", path)
    if args.check and stale:
        print("out of date (run python tools/make_recipe_hparams.py):\n  " + "\n  ".join(stale))
        return 1
    print(f"{len(all_files())} files, {len(stale)} {'stale' if args.check else 'written'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
