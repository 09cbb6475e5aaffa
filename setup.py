"""Installable `nass` package. Ranges here; exact pins in requirements.txt."""

from setuptools import find_packages, setup

setup(
    name="nass",
    version="0.1.0",
    description="Noise-robust speech separation on SpeechBrain: NASS, unified SE+SS "
    "with gradient modulation, GeCo / Fast-GeCo",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    # nass: the library; nass_demo: the demo application built on it (never imported by nass)
    packages=find_packages(include=["nass", "nass.*", "nass_demo", "nass_demo.*"]),
    package_data={"nass_demo": ["templates/*.html"]},
    python_requires=">=3.9",
    install_requires=[
        "torch>=2.11,<2.15",
        "torchaudio>=2.6",
        "speechbrain==1.1.2",
        "hyperpyyaml>=1.2",
        "mir_eval>=0.8.2,<0.9",
        "pyloudnorm>=0.1",
        "numpy>=1.24",
        "soundfile>=0.12",
        "scipy>=1.10",
        "pesq>=0.0.4",
        "pystoi>=0.3",
        "fast-bss-eval>=0.1.4",
        "diffusers>=0.30",
        "matplotlib>=3.7",
        "tqdm>=4.60",
        "jinja2>=3.1",  # the demo page (nass_demo.page)
    ],
    # TensorBoard logging (YAML key tensorboard: True): pip install "nass[tensorboard]"
    # ONNX export and its check in ONNX Runtime (nass-export --onnx): pip install "nass[export]"
    extras_require={
        "test": ["pytest>=7"],
        "tensorboard": ["tensorboard>=2.10"],
        "export": ["onnx>=1.17", "onnxruntime>=1.20", "onnxscript>=0.2"],
    },
    entry_points={
        "console_scripts": [
            "nass-separate=nass.cli:separate_main",
            "nass-evaluate=nass.cli:evaluate_main",
            "nass-reproduce=nass.reproduce:main",
            "nass-export=nass.cli:export_main",
            "nass-prepare=nass.dataio.prepare:main",
        ]
    },
)
