#!/usr/bin/env python3
"""Where the unified SE+SS gradients point, for each SE loss form (issue: 'Every method trains as
its paper says', item 4).

For a unified SE+SS demo YAML and a few real training batches of a corpus, prints per
``se_loss_type`` (``mse``: the paper's ``sum((enhanced_w - Encoder(mix_clean))^2)``;
``neg_snr``: scale-invariant):

- ``cos(g_SE, W)``: cosine between the SE gradient on the encoder's weights and the weights
  themselves. The SI-SNR separation loss is invariant to the encoder's scale, so a positive
  value is the part of g_SE that only shrinks the encoder (gradient descent moves along
  ``-g``), which gradient modulation cannot project away.
- ``cos(g_SE, g_SS)`` over the shared parameters (encoder + enhancer) and the fraction of
  shared tensors in conflict (negative dot product), as gradient modulation sees them.

Usage::

    python bench/unified_se_gradients.py --data_folder data/demo/Libri2Mix --batches 4

Runs in about a minute on 2 CPU cores (forward + two backward passes per batch, random init
with the YAML's seed; ``--checkpoint`` takes a trained run's ``save/CKPT+*`` folder instead).
"""

import argparse
import os
import sys

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def measure(yaml_path, data_folder, se_loss_type, batches, batch_size, seed):
    import speechbrain as sb
    from hyperpyyaml import load_hyperpyyaml
    from speechbrain.dataio.batch import PaddedBatch

    from nass.brains.separation import SeparationBrain
    from nass.dataio.manifest import read_manifest
    from nass.dataio.pipeline import make_dataset
    from nass.dataio.prepare import prepare_dataset

    out = os.path.join(ROOT, "results", "unified_se_gradients", se_loss_type)
    with open(yaml_path, encoding="utf-8") as f:
        hp = load_hyperpyyaml(f, {"output_folder": out, "se_loss_type": se_loss_type, "seed": seed})
    manifests = prepare_dataset("librimix", data_folder, hp["save_folder"], 2, 8000, splits=["train"])
    rows = read_manifest(manifests["train"], 2)
    data = make_dataset(rows, 2, 8000, segment_samples=hp["training_signal_len"], seed=seed)
    brain = SeparationBrain(modules=hp["modules"], opt_class=hp["optimizer"], hparams=hp,
                            run_opts={"device": "cpu", "noprogressbar": True}, checkpointer=None)
    brain.on_fit_start()
    sep = brain.separator()
    shared = sep.enhancement_shared_parameters()
    w = sep.encoder.conv1d.weight
    res = {"cos_se_w": [], "cos_se_ss": [], "conflict": []}
    for b in range(batches):
        batch = PaddedBatch([data[i] for i in range(b * batch_size, (b + 1) * batch_size)])
        losses = brain.compute_losses(brain.compute_forward(batch, sb.Stage.TRAIN), sb.Stage.TRAIN)
        g_se = torch.autograd.grad(losses["se"], shared, retain_graph=True, allow_unused=True)
        g_ss = torch.autograd.grad(losses["ss"], shared, allow_unused=True)
        pairs = [(a, c) for a, c in zip(g_se, g_ss) if a is not None and c is not None]
        flat_se = torch.cat([a.flatten() for a, _ in pairs])
        flat_ss = torch.cat([c.flatten() for _, c in pairs])
        i_w = next(i for i, p in enumerate(shared) if p is w)
        res["cos_se_w"].append(float(torch.nn.functional.cosine_similarity(g_se[i_w].flatten(), w.detach().flatten(), dim=0)))
        res["cos_se_ss"].append(float(torch.nn.functional.cosine_similarity(flat_se, flat_ss, dim=0)))
        res["conflict"].append(sum(float((a * c).sum() < 0) for a, c in pairs) / len(pairs))
    return {k: sum(v) / len(v) for k, v in res.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_folder", default=os.path.join(ROOT, "data", "demo", "Libri2Mix"))
    parser.add_argument("--yaml", default=os.path.join(ROOT, "recipes", "LibriMix", "separation", "hparams", "demo",
                                                        "sepformer-tiny-unified-gm.yaml"))
    parser.add_argument("--batches", type=int, default=4, help="training batches averaged (default 4)")
    parser.add_argument("--batch_size", type=int, default=4, help="utterances per batch (default 4)")
    parser.add_argument("--seed", type=int, default=1234, help="model initialisation and crops (default 1234)")
    args = parser.parse_args(argv)
    print("| se_loss_type | cos(g_SE, W_encoder) | cos(g_SE, g_SS) shared | conflicting tensors |")
    print("|---|---:|---:|---:|")
    for kind in ("mse", "neg_snr"):
        r = measure(args.yaml, args.data_folder, kind, args.batches, args.batch_size, args.seed)
        print(f"| {kind} | {r['cos_se_w']:+.3f} | {r['cos_se_ss']:+.3f} | {r['conflict']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
