"""Recipe YAMLs are composed from hparams/blocks/ (tools/make_recipe_hparams.py), not edited by hand."""

import glob
import importlib.util
import itertools
import os

import pytest
from hyperpyyaml import load_hyperpyyaml
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq, TaggedScalar

from conftest import REPO


def load_tool():
    spec = importlib.util.spec_from_file_location("make_recipe_hparams", os.path.join(REPO, "tools", "make_recipe_hparams.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


tool = load_tool()
FILES = tool.all_files()


def tree(text):
    """A recipe's YAML as plain data: tags kept, comments and key order dropped."""

    def canon(node):
        tag = getattr(getattr(node, "tag", None), "value", None)
        if isinstance(node, CommentedMap):
            return (tag, {k: canon(v) for k, v in node.items()})
        if isinstance(node, CommentedSeq):
            return (tag, [canon(v) for v in node])
        if isinstance(node, TaggedScalar):
            return (tag, " ".join(str(node.value).split()))
        return node

    return canon(YAML(typ="rt").load(text))[1]


def test_every_recipe_yaml_is_composed_and_current():
    # nobody edits a composed file by hand, and no recipe YAML lives outside the table
    on_disk = sorted(
        os.path.relpath(p, REPO) for p in glob.glob(os.path.join(REPO, "recipes", "*", "*", "hparams", "**", "*.yaml"), recursive=True)
    )
    assert sorted(FILES) == on_disk
    stale = [rel for rel, text in FILES.items() if open(os.path.join(REPO, rel), encoding="utf-8").read() != text]
    assert not stale, f"out of date (run python tools/make_recipe_hparams.py): {stale}"


def block_keys(name):
    items, _ = tool.parse(tool.read_block(name).splitlines(), top=True)
    return {item.key for item in items if isinstance(item, tool.Entry)}


def test_datasets_differ_in_their_data_block_only():
    # same model and method: the YAMLs differ only in keys the two data blocks set (and, for
    # custom-tiny against the demo, sizes/tiny-any-corpus.yaml: the epoch count of a folder
    # of unknown size); full-size and TINY recipes are not compared
    compared = 0
    for a, b in itertools.combinations(tool.DATASETS, 2):
        sa, sb = (set(tool.DATASETS[k].get("sizes", [])) for k in (a, b))
        if ("tiny" in sa) != ("tiny" in sb):
            continue
        allowed = block_keys(f"data/{tool.DATASETS[a]['data']}.yaml") | block_keys(f"data/{tool.DATASETS[b]['data']}.yaml")
        for size in sa ^ sb:
            allowed |= block_keys(f"sizes/{size}.yaml")
        for model, methods in tool.MODEL_METHODS.items():
            if not {a, b} <= set(tool.MODELS[model].get("datasets", tool.DATASETS)):
                continue
            for method in methods:
                ya = tree(tool.render_separation(a, model, method)[1])
                yb = tree(tool.render_separation(b, model, method)[1])
                assert set(ya) == set(yb)
                differing = {k for k in ya if ya[k] != yb[k]}
                assert differing <= allowed, (a, b, model, method, differing - allowed)
                assert differing, (a, b, model, method)  # the data block does differ
                compared += 1
    # libri2mix, libri3mix, wham, custom pairwise (14 model-methods); demo / custom-tiny (20 with dprnn-stft)
    assert compared == 6 * 14 + 1 * 20


def test_wham_and_libri2mix_differ_in_the_data_lines_only():
    def lines(ds):
        text = tool.render_separation(ds, "sepformer", "-nass")[1]
        return [line.split("#")[0].rstrip() for line in text.splitlines() if line.split("#")[0].strip()]

    a, b = lines("libri2mix"), lines("wham")
    assert len(a) == len(b)
    assert [(x, y) for x, y in zip(a, b) if x != y] == [
        ("dataset: librimix", "dataset: wham"),
        ("train_split: train-100", "train_split: tr"),
        ("valid_split: dev", "valid_split: cv"),
        ("test_split: test", "test_split: tt"),
    ]


@pytest.mark.parametrize("rel", sorted(FILES))
def test_every_recipe_checkpoints_crash_safe(rel):
    hp = tree(FILES[rel])
    tag, checkpointer = hp["checkpointer"]
    assert tag == "!new:nass.checkpoints.AtomicCheckpointer"
    assert checkpointer["checkpoints_dir"] == ("!ref", "<save_folder>")
    assert "counter" in checkpointer["recoverables"][1]


def test_the_paper_values_and_their_sources_stay_in_the_recipes():
    text = FILES["recipes/LibriMix/separation/hparams/libri2mix/sepformer-nass.yaml"]
    for line in (
        "train_split: train-100            # NASS paper: Libri2Mix train-100",
        "N_epochs: 200                     # NASS paper: 200 epochs",
        "lr: 0.00015                       # Adam 1.5e-4 (SepFormer, NASS, GM papers)",
        "lambda_nce: !ref 2 * (<num_spks> + 1) / <num_spks>   # = 3: paper lambda_NCE = 2",
        "dont_halve_until_epoch: 50    # NASS reference yaml",
    ):
        assert line in text
    text = FILES["recipes/LibriMix/separation/hparams/libri3mix/dprnn-unified-gm.yaml"]
    assert "N_epochs: 120                     # GM paper and reference yaml: 120 epochs" in text
    assert "train_split: train-360            # GM paper: Libri2Mix train-360" in text
    assert "backward: gradient_modulation" in text
    assert "noise_loss_weight: !ref 1 / <num_spks>   # = 0.3333" in FILES[
        "recipes/LibriMix/separation/hparams/libri3mix/sepformer-noise.yaml"
    ]
    assert "lr: 0.0001                        # Adam 1e-4 (reference --lr)" in FILES["recipes/LibriMix/correction/hparams/geco.yaml"]


def test_top_level_overrides_reach_the_composed_yaml(tmp_path):
    # --kernel_size, --optimizer_step_limit, --lr: every size and setting is a top-level key
    path = os.path.join(REPO, "recipes/LibriMix/separation/hparams/demo/dprnn-tiny-noise.yaml")
    with open(path, encoding="utf-8") as f:
        hp = load_hyperpyyaml(
            f, {"output_folder": str(tmp_path), "kernel_size": 64, "optimizer_step_limit": 40, "lr": 0.01}
        )
    assert hp["separator"].encoder.conv1d.kernel_size == (64,)
    assert hp["lr_scheduler"].num_training_steps == 40
    assert hp["lr_scheduler"].num_warmup_steps == 2
    assert hp["lr"] == 0.01


# ----------------------------------------------------------------------------- the merge rule
def compose_text(base, *blocks):
    items, trail = tool.parse(base.splitlines(), top=True)
    for i, block in enumerate(blocks):
        tool.merge(items, tool.parse(block.splitlines(), top=True)[0], top=True, where=f"block {i}")
    return "\n".join(tool.render(items, trail))


BASE = """# ---- data
a: 1                # one
b: 2
# ---- objects
obj: !new:X
    x: 1
    y: 2
terms:
    - !new:T1
end: 0"""


def test_a_block_replaces_in_place_and_merges_same_tag_mappings():
    out = compose_text(BASE, "# ---- data\na: 5\n# ---- objects\nobj: !new:X\n    y: 3\n    z: 4\nterms:\n    - !new:T2\n")
    assert out.splitlines() == [
        "# ---- data", "a: 5", "b: 2", "# ---- objects", "obj: !new:X", "    x: 1", "    y: 3", "    z: 4",
        "terms:", "    - !new:T1", "    - !new:T2", "end: 0",
    ]


def test_a_block_replaces_a_mapping_of_another_tag_whole():
    out = compose_text(BASE, "# ---- objects\nobj: !new:Other   # why\n    w: 1\n")
    assert "obj: !new:Other   # why\n    w: 1\nterms:" in out and "x: 1" not in out


def test_a_new_key_goes_after_the_blocks_previous_key_else_at_the_end_of_its_section():
    out = compose_text(BASE, "# ---- data\na: 1\nnew1: 7\n", "# ---- data\nnew2: 8\n")
    assert out.splitlines()[:5] == ["# ---- data", "a: 1", "new1: 7", "b: 2", "new2: 8"]


def test_a_new_section_follows_the_blocks_previous_section():
    out = compose_text(BASE, "# ---- data\n# ---- extra: things\nq: 1\n")
    assert out.splitlines()[3:6] == ["", "# ---- extra: things", "q: 1"]


def test_a_key_before_any_section_is_refused():
    with pytest.raises(ValueError, match="block 0: 'a: 2' comes before any '# ---- <section>' line"):
        compose_text(BASE, "a: 2\n")


def test_a_missing_placeholder_value_names_the_block():
    with pytest.raises(ValueError, match=r"hparams/blocks/separation.yaml: no value for \$\{\w+\}"):
        tool.compose("separation.yaml", [], {})


def test_the_generators_examples_run():
    import doctest

    assert doctest.testmod(tool).failed == 0


def test_the_correction_recipes_are_the_registrys_modes():
    from nass.correction.modes import MODES, get_mode

    assert set(tool.CORRECTION_MODES) == set(MODES)
    for mode, row in tool.CORRECTION_MODES.items():
        if row.get("starts_from"):
            get_mode(row["starts_from"])  # a mode the registry knows
    written = {os.path.basename(p)[: -len(".yaml")].replace("-tiny", "") for p in tool.CORRECTION}
    assert written == set(MODES)
