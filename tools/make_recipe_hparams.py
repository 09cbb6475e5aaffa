#!/usr/bin/env python3
"""Compose every recipe YAML from the blocks in ``hparams/blocks/`` and ``hparams/models/``.

The YAML files under ``recipes/*/{separation,correction}/hparams/`` are ordinary,
self-contained HyperPyYAML files that researchers read, diff and copy (every key top-level,
so ``--key=value`` overrides reach them; no ``!include``: a relative include broke on a copied
file, issue 20). They are not written by hand: each is *composed* from block files,

    hparams/blocks/separation.yaml      the skeleton of every separation recipe (full size,
                                        speakers only: the papers' common settings)
    hparams/blocks/correction.yaml      the skeleton of every GeCo / Fast-GeCo recipe
    hparams/blocks/data/<dataset>.yaml  the data block of one dataset (both tasks)
    hparams/blocks/methods/<m>.yaml     what one method adds (noise output, PatchNCE, unified
                                        SE+SS, GM; GeCo, Fast-GeCo)
    hparams/blocks/sizes/<s>.yaml       TINY CPU sizes (training budget, per-model sizes)
    hparams/blocks/finetune.yaml        the fine-tuning variant
    hparams/models/<model>.yaml         a model architecture, inlined (sizes as top-level keys)

by one rule, :func:`merge`: a block is a partial recipe whose ``# ---- <section>`` lines say
where it writes; a key that exists replaces that key in place (a mapping with the same tag is
merged key by key, a list gets the block's items appended); a new key goes after the block's
previous key, else at the end of its section. ``${name}`` placeholders are filled from the
tables below (``string.Template``). This script keeps only the table of which combinations
exist (``DATASETS`` x ``MODEL_METHODS``, ``CORRECTION``, ``FINETUNE``) and the values that
depend on a combination (the paper's training split per method, comments computed from
``num_spks``). ``tests/test_recipe_configs.py`` fails when a committed file differs from what
this script writes, so after editing a block run::

    python tools/make_recipe_hparams.py
"""

import argparse
import os
import re
import string
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BLOCKS = os.path.join(ROOT, "hparams", "blocks")

# ----------------------------------------------------------------------------- datasets
# The training split each method's paper used, in LibriMix's split names (data/libri*.yaml
# write it as ${train_split}); every other dataset has one training split.
LIBRIMIX_TRAIN_SPLITS = {
    "speakers": "train-360            # SpeechBrain LibriMix recipe: train-360",
    "nass": "train-100            # NASS paper: Libri2Mix train-100",
    "unified": "train-360            # GM paper: Libri2Mix train-360",
    "geco": "train-100            # GeCo reference --train_dir ...libri2mix-train100",
}

# data: the block in hparams/blocks/data/; sizes: blocks of hparams/blocks/sizes/ applied to
# every separation recipe of the dataset (TINY CPU sizes)
DATASETS = {
    "libri2mix": dict(
        folder="recipes/LibriMix/separation/hparams/libri2mix",
        title="Libri2Mix (noisy, 8 kHz, min)",
        data="libri2mix",
        train_splits=LIBRIMIX_TRAIN_SPLITS,
    ),
    "libri3mix": dict(
        folder="recipes/LibriMix/separation/hparams/libri3mix",
        title="Libri3Mix (noisy, 8 kHz, min)",
        data="libri3mix",
        train_splits=LIBRIMIX_TRAIN_SPLITS,
    ),
    "wham": dict(folder="recipes/WHAM/separation/hparams", title="WHAM! (8 kHz, min)", data="wham"),
    "custom": dict(
        folder="recipes/Custom/separation/hparams",
        title="a custom Libri2Mix-shaped folder (<split>/mix_both, s1, s2, noise[, mix_clean])",
        data="custom",
    ),
    "custom-tiny": dict(
        folder="recipes/Custom/separation/hparams/tiny",
        title="a custom Libri2Mix-shaped folder (tools/create_mixtures.py --out, or its wav8k/min), TINY CPU model",
        data="custom-tiny",
        sizes=["tiny", "tiny-any-corpus"],
    ),
    "demo": dict(
        folder="recipes/LibriMix/separation/hparams/demo",
        title="the demo corpus (tools/build_demo_corpus.py; Libri2Mix-shaped, real Debian recordings), TINY CPU model",
        data="demo",
        sizes=["tiny"],
    ),
}

# ----------------------------------------------------------------------------- models
# fragment / enhancer: files in hparams/models/; the TINY sizes are hparams/blocks/sizes/
# tiny-<model>.yaml (and tiny-enhancer-<model>.yaml for the unified methods). separator: the
# class of nass.separation and its arguments from the model (SEPARATORS); enhancer_shared:
# the enhancer's size keys that are the recipe's own; rep_channels: the key of the channel
# count of the separator's representation (PatchNCE's patches); datasets: where the model
# has recipes (default: every dataset)
SEPARATORS = {
    "MaskingSeparator": [
        "encoder: !ref <model[encoder]>",
        "masknet: !ref <model[masknet]>",
        "decoder: !ref <model[decoder]>",
    ],
    "STFTMaskingSeparator": [
        "masknet: !ref <model[masknet]>",
        "n_fft: !ref <n_fft>",
        "hop_length: !ref <hop_length>",
        "power: !ref <power>",
        "mask_normalization: !ref <mask_normalization>",
        "input_normalization: !ref <input_normalization>",
    ],
}
MODELS = {
    "sepformer": dict(fragment="sepformer.yaml", enhancer="enhancer-sepformer.yaml"),
    "dprnn": dict(fragment="dprnn.yaml", enhancer="enhancer-dprnn.yaml"),
    "convtasnet": dict(fragment="convtasnet.yaml", enhancer=None),
    # the CPU model of issue 21: TINY recipes only (no paper configuration to follow)
    "dprnn-stft": dict(
        fragment="dprnn-stft.yaml",
        enhancer="enhancer-dprnn-stft.yaml",
        enhancer_shared=("n_freq",),
        rep_channels="n_freq",
        separator="STFTMaskingSeparator",
        datasets=("demo", "custom-tiny"),
    ),
}

# ----------------------------------------------------------------------------- methods
# blocks: hparams/blocks/methods/*.yaml, applied in this order; split: the key of the
# paper's training split (LIBRIMIX_TRAIN_SPLITS)
METHODS = {
    "": dict(blocks=[], split="speakers", title="baseline (speakers only)"),
    "-noise": dict(blocks=["noise"], split="nass", title="noise as an extra output (NASS, no PatchNCE)"),
    "-nass": dict(blocks=["noise", "patch-nce"], split="nass", title="NASS: noise output + PatchNCE"),
    "-unified": dict(blocks=["unified"], split="unified", title="unified SE+SS (no gradient modulation)"),
    "-unified-gm": dict(blocks=["unified", "gm"], split="unified", title="unified SE+SS with gradient modulation"),
    "-nass-unified-gm": dict(
        blocks=["noise", "patch-nce", "unified", "unified-noise", "gm"],
        split="nass",
        title="NASS (noise output + PatchNCE) + unified SE+SS with GM",
    ),
}
MODEL_METHODS = {
    "sepformer": list(METHODS),
    "dprnn": list(METHODS),
    "convtasnet": ["", "-noise"],
    "dprnn-stft": list(METHODS),
}

# Custom fine-tuning YAMLs (``<model>-tiny<method>-finetune.yaml`` in the custom-tiny folder):
# the architecture of the demo model (tools/run_demo.py) plus hparams/blocks/finetune.yaml (a
# tenth of its peak rate, a short budget); every other YAML fine-tunes too with --init_from
FINETUNE = [("dprnn", "-noise"), ("dprnn-stft", "-noise")]  # the previous demo model, and today's
FINETUNE_LR_FACTOR = 0.1
FINETUNE_NOTES = (
    "# Fine-tuning: --init_from=<trained model or training folder> (matching weights are copied,\n"
    "# the rest is reported by name; fresh optimiser and schedule; resume works as usual)\n"
)


# ----------------------------------------------------------------------------- fragments
OBJECT_TAGS = ("!new:", "!name:", "!apply:")


def read_fragment(name):
    """A model fragment of ``hparams/models/`` as ``(header, sizes, objects)``.

    ``header``: its leading comment lines; ``sizes``: ``[(key, value, comment)]`` of the
    top-level scalar keys (``num_masks`` left out: the recipe defines it); ``objects``:
    ``[(key, [lines])]`` of the top-level objects (tag line and indented body).
    """
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


def inline_fragment(name, mapping, prefix="", shared=()):
    """Recipe lines for a fragment: its sizes as top-level keys, its objects under ``mapping:``.

    Parameters
    ----------
    name : str
        Fragment file in ``hparams/models/``.
    mapping : str
        The recipe key holding the objects (``model``, ``enhancer_model``). The TINY sizes
        are blocks of ``hparams/blocks/sizes/`` that replace the size keys afterwards.
    prefix : str
        Prepended to the size keys (``enhancer_``), except those in ``shared``.
    shared : sequence of str
        Size keys defined elsewhere in the recipe (``N_encoder_out`` of the enhancer).
    """
    header, sizes, objects = read_fragment(name)
    out = [f"# architecture copied from hparams/models/{name} by tools/make_recipe_hparams.py:"]
    out += header
    names = {key: (key if key in shared else prefix + key) for key, _, _ in sizes}
    for key, value, comment in sizes:
        if key in shared:
            continue
        line = f"{names[key]}: {value}"
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


# ----------------------------------------------------------------------------- composition
SECTION = re.compile(r"^# ---- ([\w-]+)")
KEY = re.compile(r"^\s*(\w+):(?:\s|$)")


def _indent(line):
    return len(line) - len(line.lstrip(" "))


class Entry:
    """One key (or list item) of a YAML level: its leading comment lines, its line and body."""

    def __init__(self, lead, head):
        self.lead, self.head, self.body = lead, head, []

    @property
    def key(self):
        m = KEY.match(self.head)
        return m.group(1) if m else None  # a list item ("- ...") has no key

    @property
    def value(self):
        """The text after ``key:`` without its comment (the tag of a mapping)."""
        return self.head.split(":", 1)[1].split(" #", 1)[0].strip() if self.key else None

    def lines(self):
        return self.lead + [self.head] + self.body


class Section:
    """A ``# ---- <name> ...`` line of the top level (with the blank lines above it)."""

    def __init__(self, lead, head):
        self.lead, self.head = lead, head
        self.name = SECTION.match(head).group(1)

    def lines(self):
        return self.lead + [self.head]


def parse(lines, top):
    """``(items, trail)`` of one YAML level: entries (and, at the top, sections) in order;
    ``trail``: the comment / blank lines after the last entry. Comment lines belong to the
    entry below them, unless they are indented under the line just above (a continued
    comment)."""
    items, pending, level = [], [], None
    for line in lines:
        stripped = line.strip()
        if not stripped:
            pending.append(line)
            continue
        last = items[-1] if items and isinstance(items[-1], Entry) else None
        if stripped.startswith("#"):
            if top and SECTION.match(line):
                items.append(Section(pending, line))
                pending = []
            elif last is not None and not pending and _indent(line) > _indent(last.head):
                last.body.append(line)
            else:
                pending.append(line)
            continue
        if level is None:
            level = _indent(line)
        if _indent(line) > level:
            if last is None:
                raise ValueError(f"indented line without a key above it: {line!r}")
            last.body += pending + [line]
            pending = []
            continue
        items.append(Entry(pending, line))
        pending = []
    return items, pending


def render(items, trail=()):
    return [line for item in items for line in item.lines()] + list(trail)


def _find(items, key):
    for item in items:
        if isinstance(item, Entry) and item.key is not None and item.key == key:
            return item
    return None


def _section_end(items, name):
    """Index after the last item of section ``name`` (where a new key of it goes)."""
    start = next(i for i, item in enumerate(items) if isinstance(item, Section) and item.name == name)
    for i in range(start + 1, len(items)):
        if isinstance(items[i], Section):
            return i
    return len(items)


def merge(items, overlay, top, where):
    """Apply one level of a block (``overlay``) to the recipe's ``items``, in place.

    A key that exists is replaced where it is (its comment lines are kept unless the block
    writes its own, and so is its comment on the key line). When both are mappings or lists
    under the same tag (``separator: !new:...MaskingSeparator``, ``loss_terms:``), they are
    merged level by level instead, and a list gets the block's items appended. A new key
    goes after the block's previous key, else at the end of the block's current
    ``# ---- <section>``; a section the recipe lacks is added after the block's previous one.

    Parameters
    ----------
    items : list
        :func:`parse` items of the recipe so far (changed in place).
    overlay : list
        :func:`parse` items of the block.
    top : bool
        True at the top level (where sections exist and every key needs one).
    where : str
        The block's name, for error messages.

    Raises
    ------
    ValueError
        A top-level key of the block stands before any ``# ---- <section>`` line.

    Example
    -------
    >>> recipe, _ = parse(["# ---- method", "noise_target: none", "num_masks: 2",
    ...                    "# ---- loss", "loss_terms:", "    - !new:SpeakerPIT"], top=True)
    >>> block, _ = parse(["# ---- method", "noise_target: extra_output", "noise_weight: 0.5",
    ...                   "# ---- loss", "loss_terms:", "    - !new:NoiseSISNR"], top=True)
    >>> merge(recipe, block, top=True, where="example")
    >>> print("\\n".join(render(recipe)))
    # ---- method
    noise_target: extra_output
    noise_weight: 0.5
    num_masks: 2
    # ---- loss
    loss_terms:
        - !new:SpeakerPIT
        - !new:NoiseSISNR
    """
    section, cursor = None, None
    for entry in overlay:
        if isinstance(entry, Section):
            names = [item.name for item in items if isinstance(item, Section)]
            if entry.name not in names:
                pos = _section_end(items, section) if section else len(items)
                items.insert(pos, Section([""], entry.head))
            elif entry.head.strip() != f"# ---- {entry.name}":
                next(i for i in items if isinstance(i, Section) and i.name == entry.name).head = entry.head
            section, cursor = entry.name, None
            continue
        if top and section is None:
            raise ValueError(f"{where}: {entry.head.strip()!r} comes before any '# ---- <section>' line")
        has_lead = any(line.strip() for line in entry.lead)
        old = _find(items, entry.key) if entry.key is not None else None
        if old is not None:
            if entry.body and old.body and entry.value == old.value:
                sub, sub_trail = parse(old.body, top=False)
                merge(sub, parse(entry.body, top=False)[0], top=False, where=where)
                old.body = render(sub, sub_trail)
            else:
                old.head, old.body = entry.head, entry.body
            if has_lead:
                old.lead = entry.lead
            if " #" in entry.head:  # the block's comment on the key line wins
                old.head = entry.head
            cursor = old
            continue
        if cursor is not None:
            pos = items.index(cursor) + 1
        else:
            pos = _section_end(items, section) if top else len(items)
        items.insert(pos, entry)
        cursor = entry


def read_block(name):
    with open(os.path.join(BLOCKS, name), encoding="utf-8") as f:
        return f.read()


def block_value(name, key):
    """The value written for top-level ``key`` in block ``name`` (to compute comments from)."""
    m = re.search(rf"^{key}:\s*([^#\n]*?)\s*(#|$)", read_block(name), re.M)
    if m is None:
        raise ValueError(f"hparams/blocks/{name} has no top-level {key!r}")
    return m.group(1)


def compose(base, blocks, variables):
    """The text of one recipe: block ``base`` with ``blocks`` applied in order (:func:`merge`).

    Parameters
    ----------
    base : str
        The skeleton, a path under ``hparams/blocks/`` (``separation.yaml``, ``correction.yaml``).
    blocks : list of str
        Paths under ``hparams/blocks/`` (``methods/noise.yaml``, ``data/wham.yaml``, ...).
    variables : dict
        Values of the ``${name}`` placeholders of every block (``string.Template``).

    Returns
    -------
    str
        The recipe YAML text, ending with one newline.

    Raises
    ------
    ValueError
        A placeholder without a value, two sections of ``base`` with one name, or a
        block's key outside any section (both name the block).

    Example
    -------
    >>> text = compose("separation.yaml", ["methods/gm.yaml"], dict(
    ...     name="x", blocks="", model_title="", method_title="", data_title="", notes="", model="",
    ...     separator_class="MaskingSeparator", separator_parts=""))
    >>> [line for line in text.splitlines() if line.startswith("backward:")]
    ['backward: gradient_modulation     # plain | gradient_modulation (GM paper: g_SE projected when it conflicts with g_SS)']
    """

    def fill(name):
        try:
            return string.Template(read_block(name)).substitute(variables)
        except KeyError as e:
            raise ValueError(f"hparams/blocks/{name}: no value for ${{{e.args[0]}}}") from None

    items, trail = parse(fill(base).splitlines(), top=True)
    names = [item.name for item in items if isinstance(item, Section)]
    if len(names) != len(set(names)):
        raise ValueError(f"hparams/blocks/{base}: two '# ---- <section>' lines share a first word: {names}")
    for name in blocks:
        merge(items, parse(fill(name).splitlines(), top=True)[0], top=True, where=f"hparams/blocks/{name}")
    return "\n".join(render(items, trail)).rstrip("\n") + "\n"


def _blocks_line(base, blocks, extra=()):
    names = [base] + list(blocks)
    return "hparams/blocks/{" + ", ".join(n[:-5] for n in names) + "}.yaml" + "".join(f" + {e}" for e in extra)


# ----------------------------------------------------------------------------- separation
def render_separation(ds_key, model, method, finetune=False):
    ds, m = DATASETS[ds_key], METHODS[method]
    sizes = ds.get("sizes", [])
    tiny = "tiny" in sizes
    front = "unified" in m["blocks"]
    name = f"{model}{'-tiny' if tiny else ''}{method}{'-finetune' if finetune else ''}"
    blocks = [f"methods/{b}.yaml" for b in m["blocks"]]
    if tiny:
        blocks += [f"sizes/{s}.yaml" for s in sizes if s == "tiny"] + [f"sizes/tiny-{model}.yaml"]
        if front:
            blocks.append(f"sizes/tiny-enhancer-{model}.yaml")
        blocks += [f"sizes/{s}.yaml" for s in sizes if s != "tiny"]
    blocks.append(f"data/{ds['data']}.yaml")
    if finetune:
        blocks.append("finetune.yaml")
    num_spks = int(block_value(f"data/{ds['data']}.yaml", "num_spks"))
    fragment = MODELS[model]
    separator = fragment.get("separator", "MaskingSeparator")
    variables = dict(
        name=name,
        blocks=_blocks_line("separation.yaml", blocks, [f"hparams/models/{fragment['fragment']}"]),
        model_title=f"{model}{' (TINY CPU size)' if tiny else ''}",
        method_title=m["title"],
        data_title=ds["title"],
        notes=FINETUNE_NOTES if finetune else "",
        model="\n".join(inline_fragment(fragment["fragment"], "model")),
        separator_class=separator,
        rep_channels=fragment.get("rep_channels", "N_encoder_out"),
        separator_parts="\n".join("    " + line for line in SEPARATORS[separator]),
        enhancer="\n".join(
            inline_fragment(
                fragment["enhancer"],
                "enhancer_model",
                prefix="enhancer_",
                shared=fragment.get("enhancer_shared", ("N_encoder_out",)),
            )
        )
        if fragment["enhancer"]
        else "",
        train_split=ds.get("train_splits", {}).get(m["split"], ""),
        noise_loss_weight=f"{1 / num_spks:.4g}",
        lambda_nce=f"{2.0 * (num_spks + 1) / num_spks:.4g}",
    )
    if finetune:
        peak = float(block_value(f"sizes/tiny-{model}.yaml", "lr"))
        variables.update(peak_lr=f"{peak:g}", finetune_lr=f"{peak * FINETUNE_LR_FACTOR:.4g}")
    return name, compose("separation.yaml", blocks, variables)


# ----------------------------------------------------------------------------- correction
CORRECTION_MODES = {
    "geco": dict(
        title="GeCo: generative correction of a trained separator's estimates (score-based diffusion)",
        reference_files="geco/data_module.py, geco/model.py, geco/sdes.py, geco/backbones/ncsnpp.py",
    ),
    "fast-geco": dict(
        title="Fast-GeCo: GeCo fine-tuned to ONE reverse step with an SI-SNR loss",
        reference_files="fastgeco/model.py, train-fastgeco.py",
        starts_from="geco",  # fine-tunes a trained GeCo corrector: its Run example names that run
    ),
}
# path: data block, mode, TINY or not, the --data_folder of the Run example (None: the YAML's)
CORRECTION = {}
for _folder, _data, _tiny, _title, _example in (
    ("recipes/LibriMix/correction/hparams", "libri2mix", False, "Libri2Mix (noisy, 8 kHz, min).", "/data/Libri2Mix"),
    (
        "recipes/LibriMix/correction/hparams/demo",
        "demo",
        True,
        "the demo corpus (Libri2Mix-shaped), TINY CPU sizes: a smoke-scale run, not the paper's.",
        None,
    ),
    (
        "recipes/Custom/correction/hparams",
        "custom",
        False,
        "a custom Libri2Mix-shaped folder (<split>/mix_both, s1, s2, noise[, mix_clean]).",
        "/data/my_corpus",
    ),
    (
        "recipes/Custom/correction/hparams/tiny",
        "custom-tiny",
        True,
        "your own Libri2Mix-shaped folder (tools/create_mixtures.py --out), TINY CPU sizes (as demo/).",
        "mycorpus/Libri2Mix",
    ),
):
    for _mode in CORRECTION_MODES:
        _name = _mode + ("-tiny" if _tiny else "")
        CORRECTION[f"{_folder}/{_name}.yaml"] = dict(
            data=_data, mode=_mode, tiny=_tiny, data_title=_title, data_example=_example
        )


def render_correction(path, data, mode, tiny, data_title, data_example):
    """The text of one GeCo / Fast-GeCo recipe YAML (``path`` relative to the root)."""
    name = os.path.basename(path)[: -len(".yaml")]
    blocks = [f"methods/{mode}.yaml"]
    if tiny:
        blocks += ["sizes/tiny-correction.yaml", f"sizes/tiny-{mode}.yaml"]
    blocks.append(f"data/{data}.yaml")
    recipe = path.split("/hparams/")[0]
    separator = f"results/sepformer{'-tiny' if tiny else ''}-noise/1234"
    args = ([f"--data_folder={data_example}"] if data_example else []) + [f"--separator_folder={separator}"]
    starts_from = CORRECTION_MODES[mode].get("starts_from")
    if starts_from:
        args.append(f"--geco_folder=results/correction/{starts_from}{'-tiny' if tiny else ''}/1234")
        run = " (after the GeCo run):\n#   python " + f"{recipe}/train.py {path} \\\n#       " + " \\\n#       ".join(args)
    else:
        (then,) = [m for m, row in CORRECTION_MODES.items() if row.get("starts_from") == mode]
        fast = os.path.relpath(os.path.join(os.path.dirname(path), f"{then}{'-tiny' if tiny else ''}.yaml"), recipe)
        run = f":   python {recipe}/train.py {path} \\\n#            " + " ".join(args)
        run += f"\n# Then Fast-GeCo: {fast} --geco_folder=<this run's output_folder>"
    variables = dict(
        name=name,
        title=CORRECTION_MODES[mode]["title"],
        reference_files=CORRECTION_MODES[mode]["reference_files"],
        blocks=_blocks_line("correction.yaml", blocks),
        data_title=data_title,
        run=run,
        train_split=LIBRIMIX_TRAIN_SPLITS["geco"],
    )
    return compose("correction.yaml", blocks, variables)


# ----------------------------------------------------------------------------- files
def all_files():
    """``{relative path: text}`` of every recipe YAML."""
    out = {}
    for ds_key, ds in DATASETS.items():
        for model, methods in MODEL_METHODS.items():
            if ds_key not in MODELS[model].get("datasets", DATASETS):
                continue
            for method in methods:
                name, text = render_separation(ds_key, model, method)
                out[os.path.join(ds["folder"], name + ".yaml")] = text
    for model, method in FINETUNE:
        name, text = render_separation("custom-tiny", model, method, finetune=True)
        out[os.path.join(DATASETS["custom-tiny"]["folder"], name + ".yaml")] = text
    for path, recipe in CORRECTION.items():
        out[path] = render_correction(path, **recipe)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="exit 1 if a committed file is out of date")
    args = parser.parse_args(argv)
    files = all_files()
    stale = []
    for rel, text in files.items():
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
    print(f"{len(files)} files, {len(stale)} {'stale' if args.check else 'written'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
