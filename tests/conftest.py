"""Shared fixtures: a tiny synthetic Libri2Mix-shaped corpus the tests generate themselves."""

import os

import numpy as np
import pytest

from nass.dataio.audio import write_audio

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def dominant_hz(x, sample_rate):
    """Frequency (Hz) of the largest magnitude-spectrum bin of a 1-D signal."""
    x = np.asarray(x, dtype=np.float64)
    spec = np.abs(np.fft.rfft(x))
    return float(np.fft.rfftfreq(x.size, 1 / sample_rate)[int(np.argmax(spec))])


def synthetic_voice(rng, n, sample_rate, f0):
    """A harmonic, amplitude-modulated 'voice' with pitch ``f0`` Hz (deterministic given rng)."""
    t = np.arange(n) / sample_rate
    vibrato = 1 + 0.03 * np.sin(2 * np.pi * rng.uniform(3, 6) * t)
    phase = 2 * np.pi * f0 * np.cumsum(vibrato) / sample_rate
    x = sum(np.sin(k * phase + rng.uniform(0, 2 * np.pi)) / k for k in range(1, 6))
    envelope = 0.5 * (1 + np.sin(2 * np.pi * rng.uniform(1.5, 3.0) * t + rng.uniform(0, 2 * np.pi)))
    return (x * envelope).astype("float32")


def write_librimix_tree(root, splits=("train", "dev", "test"), n_per_split=4, seconds=0.5, sample_rate=8000,
                        num_spks=2, seed=0, noise_level=0.05):
    """Write ``root/wav8k/min/<split>/{mix_both,mix_clean,s1,s2,noise}`` with exact sums.

    Speakers differ by pitch (distinct f0 ranges), so a tiny model can learn to separate them.
    """
    rng = np.random.default_rng(seed)
    n = int(seconds * sample_rate)
    base = os.path.join(root, f"wav{sample_rate // 1000}k", "min")
    f0_ranges = [(100, 140), (220, 300), (400, 480)]
    for split in splits:
        for i in range(n_per_split):
            uid = f"{split}_{i:03d}"
            srcs = [0.3 * synthetic_voice(rng, n, sample_rate, rng.uniform(*f0_ranges[s])) for s in range(num_spks)]
            noise = (noise_level * rng.standard_normal(n)).astype("float32")
            clean = np.sum(srcs, axis=0)
            parts = {f"s{s + 1}": srcs[s] for s in range(num_spks)}
            parts.update(noise=noise, mix_clean=clean, mix_both=clean + noise)
            for name, x in parts.items():
                write_audio(os.path.join(base, split, name, uid + ".wav"), x, sample_rate, subtype="FLOAT")
    return root


@pytest.fixture(scope="session")
def tiny_librimix(tmp_path_factory):
    """A Libri2Mix-shaped folder: splits train/dev/test, 4 mixtures of 0.5 s each."""
    return write_librimix_tree(str(tmp_path_factory.mktemp("Libri2Mix")))
