"""Listening demo page (nass_demo.page, tools/make_demo_page.py): links, escaping, alignment,
training-log parsing, re-runs, and a real headless-Chromium render."""

import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import types
from html.parser import HTMLParser

import numpy as np
import pytest
import soundfile as sf
import torch

from nass.dataio.audio import read_audio
from nass.dataio.manifest import read_manifest, write_manifest
from nass.dataio.prepare import prepare_dataset
from nass_demo.page import DemoSystem, main, make_demo_page, parse_train_log, safe_stem
from nass.losses.si_snr import si_snr
from conftest import write_librimix_tree
from test_inference import write_model_folder

EVIL_IDS = ['../<b>evil</b>&"x', "ok'<2>", "plain_3"]
TRAIN_LOG = "".join(json.dumps(r) + "\n" for r in (  # train_log.jsonl rows (nass.curves.append_train_log)
    {"optimizer_step": 50, "lr": 1e-3, "train_running": {"loss": 20.0}},
    {"epoch": 1, "optimizer_step": 100, "lr": 1e-3, "train": {"loss": 18.74, "si-snr": -6.39},
     "valid": {"loss": 9.81, "si-snr": -2.34}},
    {"epoch": 2, "optimizer_step": 200, "lr": 5e-4, "train": {"loss": 6.0}, "valid": {"loss": 5.5, "si-snr": 1.25}},
))


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.srcs = []  # (tag, src)

    def handle_starttag(self, tag, attrs):
        if tag in ("img", "audio"):
            self.srcs.append((tag, dict(attrs)["src"]))


def _links(page):
    parser = _Links()
    parser.feed(open(page, encoding="utf-8").read())
    return parser.srcs


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Tiny Libri2Mix test split, a manifest whose IDs need escaping, two model folders."""
    base = tmp_path_factory.mktemp("demo")
    root = write_librimix_tree(str(base / "Libri2Mix"), splits=("test",), n_per_split=3, seconds=0.5)
    csv = prepare_dataset("librimix", root, str(base / "csv"), splits=["test"])["test"]
    rows = read_manifest(csv, 2)
    for row, uid in zip(rows, EVIL_IDS):
        row["ID"] = uid
    evil_csv = str(base / "evil.csv")
    write_manifest(rows, evil_csv, 2)
    noisy, plain = str(base / "m_noise"), str(base / "m_plain")
    write_model_folder(noisy, noise=True, scores=(1.0,))
    write_model_folder(plain, noise=False, scores=(1.0,))
    with open(os.path.join(noisy, "train_log.jsonl"), "w") as f:
        f.write(TRAIN_LOG)
    with open(os.path.join(plain, "train_log.txt"), "w") as f:  # an old run: text log only, not read
        f.write("epoch: 1, lr: 1.00e-03 - train loss: 18.74 - valid loss: 9.81, valid si-snr: -2.34e+00\n")
    return {"root": root, "csv": evil_csv, "noisy": noisy, "plain": plain, "base": base}


@pytest.fixture(scope="module")
def page(corpus):
    out = str(corpus["base"] / "page")
    argv = ["--manifest", corpus["csv"], "--model", f"NASS <noise>={corpus['noisy']}",
            "--model", f"plain={corpus['plain']}", "--num_examples", "2", "--seed", "1", "--out", out]
    assert main(argv) == 0
    return os.path.join(out, "index.html")


def test_every_link_is_relative_and_exists_and_text_is_escaped(page):
    out = os.path.dirname(page)
    text = open(page, encoding="utf-8").read()
    srcs = _links(page)
    # curves + 2 examples x (mixture + s1, s2, noise refs + NASS s1, s2, noise + plain s1, s2)
    assert [s for t, s in srcs if t == "img"].count("img/curves.png") == 1
    assert len([1 for t, _ in srcs if t == "img"]) == 1 + 2 * 9
    assert len([1 for t, _ in srcs if t == "audio"]) == 2 * 9
    for _, src in srcs:
        assert not os.path.isabs(src) and ":" not in src and ".." not in src.split("/"), src
        target = os.path.realpath(os.path.join(out, src))
        assert target.startswith(os.path.realpath(out) + os.sep) and os.path.isfile(target), src
    for _, src in srcs:
        if src.endswith(".wav"):
            info = sf.info(os.path.join(out, src))
            assert info.samplerate == 8000 and info.frames == 4000
    # every ID and system name is escaped; nothing of them reaches the markup raw
    assert "<b>evil" not in text and "NASS <noise>" not in text
    shown = [uid for uid in EVIL_IDS if f"<code>{__import__('html').escape(uid)}</code>" in text]
    assert len(shown) == 2
    assert "NASS &lt;noise&gt;" in text
    assert "no noise output" in text  # the plain model's noise cell


def test_the_template_writes_the_table_markup(page):
    """The jinja2 template's markup: the mixture cell spans the reference row and one row per
    system, each row has its cells, the static parts (style, media check) are there once."""
    text = open(page, encoding="utf-8").read()
    assert text.count('<td rowspan="3"><img src="img/') == 2  # 2 examples, 1 + 2 systems rows
    assert "rowspan=&" not in text and "&lt;td" not in text and "&lt;img" not in text
    assert text.count("<h2>Example ") == 2 and text.count('<td class="label">Reference</td>') == 2
    assert text.count("<style>") == 1 and text.count('<p id="media-check"></p>') == 1
    assert text.startswith("<!DOCTYPE html>") and text.rstrip().endswith("</body></html>")


def test_estimates_are_aligned_by_best_permutation(corpus, tmp_path):
    rows = read_manifest(corpus["csv"], 2)[:2]
    refs = {r["mix_wav"]: r for r in rows}

    class Swapped:  # returns the exact references in the wrong order, plus the exact noise
        def separate_file(self, path):
            r = refs[path]
            s1, s2, noise = (torch.from_numpy(read_audio(r[k])[0]) for k in ("s1_wav", "s2_wav", "noise_wav"))
            return torch.stack([s2, 0.5 * s1], 1), noise

    page = make_demo_page(rows, [DemoSystem("oracle", Swapped())], str(tmp_path / "p"), num_examples=2)
    out = os.path.dirname(page)
    text = open(page, encoding="utf-8").read()
    for index, row in enumerate(rows):
        stem = safe_stem(row["ID"], index)
        for k in ("s1", "s2", "noise"):
            est, _ = read_audio(os.path.join(out, "audio", f"{stem}_m0_oracle_{k}.wav"))
            ref, _ = read_audio(row[f"{k}_wav"])
            assert float(si_snr(torch.from_numpy(est), torch.from_numpy(ref))) > 30, (stem, k)
    scores = [float(x) for x in re.findall(r"SI-SNR (-?[\d.]+) dB \(SI-SNRi", text)]
    assert len(scores) == 4 and min(scores) > 30


def test_train_log_jsonl_gives_the_per_epoch_numbers(tmp_path, corpus, caplog):
    """The page reads train_log.jsonl only: the same per-epoch numbers SpeechBrain's text log
    held, plus the running loss; a folder with only train_log.txt is named in a warning."""
    import logging

    from nass_demo.page import DemoPageError, load_system

    p = tmp_path / "train_log.jsonl"
    p.write_text(TRAIN_LOG)
    records = parse_train_log(str(p))
    assert [r["step"] for r in records] == [50, 100, 200]
    assert [r.get("epoch") for r in records] == [None, 1, 2]
    assert records[0] == {"step": 50, "train loss": 20.0}
    assert records[1]["valid si-snr"] == -2.34 and records[1]["train loss"] == 18.74
    assert records[1]["valid loss"] == 9.81 and records[2]["valid si-snr"] == 1.25
    assert "train si-snr" not in records[1]
    assert parse_train_log(str(tmp_path / "missing.jsonl")) == []
    with pytest.raises(DemoPageError, match="train_log.jsonl"):
        parse_train_log(str(tmp_path / "train_log.txt"))
    with caplog.at_level(logging.WARNING, logger="nass_demo.page"):
        assert load_system("old", corpus["plain"]).log_path is None
        assert load_system("new", corpus["noisy"]).log_path == os.path.join(corpus["noisy"], "train_log.jsonl")
    assert len(caplog.records) == 1
    message = caplog.records[0].getMessage()
    assert corpus["plain"] in message and "train_log.txt is not read" in message and "no training curve" in message


class _ReversingCorrector:
    """Stand-in GeCo corrector: returns each estimate time-reversed (a visible change)."""

    calls = []

    def correct(self, y_wave, m_wave, mode, num_steps):
        self.calls.append((mode, num_steps, tuple(y_wave.shape)))
        return y_wave.flip(-1)


def test_rerun_replaces_page_and_removes_stale_files(corpus, page, tmp_path, monkeypatch):
    out = str(tmp_path / "rerun")
    shutil.copytree(os.path.dirname(page), out)
    mine = os.path.join(out, "img", "user_file.png")  # not written by the tool: kept
    open(mine, "wb").close()
    # --corrector wiring without importing the (slow) diffusion stack: a fake nass.correction.model
    loaded = []
    fake = types.ModuleType("nass.correction.model")
    fake.load_corrector = lambda folder, device="cpu": loaded.append(folder) or _ReversingCorrector()
    monkeypatch.setitem(sys.modules, "nass.correction", types.ModuleType("nass.correction"))
    monkeypatch.setitem(sys.modules, "nass.correction.model", fake)
    corr = str(tmp_path / "corrector")
    argv = ["--data_folder", corpus["root"], "--dataset", "librimix", "--split", "test",
            "--model", f"plain={corpus['plain']}", "--corrector", f"plain+GeCo={corpus['plain']}:{corr}:geco",
            "--correction_steps", "4", "--num_examples", "1", "--out", out]
    assert main(argv) == 0
    assert loaded == [corr] and _ReversingCorrector.calls == [("geco", 4, (1, 4000))] * 2
    text = open(os.path.join(out, "index.html"), encoding="utf-8").read()
    assert "plain+GeCo" in text and "NASS" not in text
    stem = next(f for f in os.listdir(os.path.join(out, "audio")) if f.endswith("_m0_plain_s1.wav"))[: -len("_m0_plain_s1.wav")]
    plain = [read_audio(os.path.join(out, "audio", f"{stem}_m0_plain_s{j}.wav"))[0] for j in (1, 2)]
    fixed = [read_audio(os.path.join(out, "audio", f"{stem}_m1_plain_GeCo_s{j}.wav"))[0] for j in (1, 2)]
    # the corrected system's estimates are the plain ones reversed (up to order and 16-bit rounding)
    assert min(np.abs(fixed[0] - plain[j][::-1]).max() for j in (0, 1)) < 1e-3
    srcs = {s for _, s in _links(os.path.join(out, "index.html"))}
    on_disk = {f"{d}/{f}" for d in ("img", "audio") for f in os.listdir(os.path.join(out, d))}
    assert on_disk == srcs | {"img/user_file.png"}  # the previous run's files are gone, the user's kept
    assert len(srcs) == 2 * (1 + 2 + 1 + 2 + 2)  # mixture, refs s1/s2/noise, 2 systems x s1/s2 (img + audio)
    assert not [f for f in os.listdir(out) if f.startswith(".tmp")]
    assert main(["--manifest", corpus["csv"], "--model", "bad", "--out", out]) == 2
    assert main(["--manifest", corpus["csv"], "--corrector", f"x={corpus['plain']}:{corr}", "--out", out]) == 2
    assert main(["--manifest", corpus["csv"], "--corrector", f"x={corpus['plain']}:{corr}:fast", "--out", out]) == 2
    assert os.path.isfile(os.path.join(out, "index.html"))  # a failed run leaves the page in place


# ----------------------------------------------------------------------------- real browser
def _chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def _run_chromium(args, page):
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    try:
        cmd = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               f"--user-data-dir={profile}", "--virtual-time-budget=5000", *args, "file://" + os.path.abspath(page)]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=90, check=True).stdout
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def _media_state(dom):
    match = re.search(r'<body data-media-ok="(\d+)" data-media-broken="(\d+)" data-media-pending="(\d+)"', dom)
    assert match, "the page's media check did not run:\n" + dom[:500]
    check = re.search(r'<p id="media-check"[^>]*>([^<]*)</p>', dom).group(1)
    return tuple(int(x) for x in match.groups()), check


@pytest.mark.skipif(_chromium() is None, reason="Debian package chromium is not installed (apt-get install chromium)")
def test_chromium_renders_page_without_broken_media(page, tmp_path):
    total = len(_links(page))
    (ok, broken, pending), check = _media_state(_run_chromium(["--dump-dom"], page))
    assert (ok, broken, pending) == (total, 0, 0), check
    assert check == f"All {total} images and audio files loaded."

    shot = str(tmp_path / "shot.png")
    _run_chromium([f"--screenshot={shot}", "--window-size=1400,2000", "--hide-scrollbars"], page)
    with open(shot, "rb") as f:
        head = f.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", head[16:24]) == (1400, 2000)

    # the check really detects broken links: remove one spectrogram and one audio file
    broken_dir = str(tmp_path / "broken")
    shutil.copytree(os.path.dirname(page), broken_dir)
    img = next(s for t, s in _links(page) if t == "img" and s != "img/curves.png")
    wav = next(s for t, s in _links(page) if t == "audio")
    os.remove(os.path.join(broken_dir, img))
    os.remove(os.path.join(broken_dir, wav))
    (ok, broken, pending), check = _media_state(_run_chromium(["--dump-dom"], os.path.join(broken_dir, "index.html")))
    assert (ok, broken) == (total - 2, 2), check
    assert img in check and wav in check


def test_curves_from_train_log_jsonl_per_step(tmp_path):
    """Issue 20: the demo page reads train_log.jsonl (every log_interval_steps), not regexes;
    a run shorter than one epoch still has a curve."""
    import json

    from nass_demo.page import plot_training_curves

    p = tmp_path / "train_log.jsonl"
    rows = [{"optimizer_step": k, "lr": 1e-3, "train_running": {"loss": 10.0 - k / 100, "nce_loss": 4.0}}
            for k in (50, 100, 150)]
    rows.append({"epoch": 1, "optimizer_step": 160, "lr": 1e-3, "train": {"loss": 8.0},
                 "valid": {"loss": 7.0, "si-snr": 1.5}})
    p.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    records = parse_train_log(str(p))
    assert [r["step"] for r in records] == [50, 100, 150, 160]
    assert records[0]["train loss"] == pytest.approx(10.0 - 0.5 - 4.0)  # the PatchNCE term left out
    assert records[-1]["valid si-snr"] == 1.5 and records[-1]["epoch"] == 1
    assert plot_training_curves({"NASS": records}, str(tmp_path / "curves.png"))
