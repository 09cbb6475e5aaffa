#!/usr/bin/env python3
"""Build the demo corpus: an 8 kHz Libri2Mix-shaped noisy corpus from Debian packages.

Thin command line over :func:`nass_demo.corpus.build_demo_corpus`; see
``docs/demo_corpus.md``. Install the packages first: ``make demo`` or
``sudo apt-get install $(grep -v '^#' tools/demo_packages.txt)``.

Examples
--------
    python tools/build_demo_corpus.py                       # data/demo, 3000/300/300
    python tools/build_demo_corpus.py --sources foundation --out data/demo11
    python tools/build_demo_corpus.py --pseudo_speakers 2 --synthetic --force
    python tools/build_demo_corpus.py --list_sources
"""

import argparse
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main(argv=None):
    from nass_demo import corpus as dc

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default=os.path.join(REPO, "data", "demo"), help="output folder (default: data/demo)")
    p.add_argument("--n_train", type=int, default=3000)
    p.add_argument("--n_dev", type=int, default=300)
    p.add_argument("--n_test", type=int, default=300)
    p.add_argument("--synthetic", action=argparse.BooleanOptionalAction, default=False,
                   help="add Festival/Flite synthetic voices (default: off)")
    p.add_argument("--pseudo_speakers", type=int, default=0, metavar="K",
                   help="speed-perturbed pseudo-speakers per real reader (default: 0)")
    p.add_argument("--sources", default="all",
                   help="comma-separated real-voice sources, 'all' (default) or 'foundation' (11 voices)")
    p.add_argument("--max_minutes_per_speaker", type=float, default=dc.MAX_MINUTES_PER_SPEAKER)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--packages_root", default="/", help="where the Debian packages are installed")
    p.add_argument("--num_workers", type=int, default=2)
    p.add_argument("--force", action="store_true", help="rebuild even if corpus_stats.json matches")
    p.add_argument("--list_sources", action="store_true", help="list the sources and exit")
    a = p.parse_args(argv)
    if a.list_sources:
        for name, src in {**dc.SPEECH_SOURCES, **dc.NOISE_SOURCES}.items():
            kind = "noise" if name in dc.NOISE_SOURCES else ("speech, foundation" if src.foundation else "speech")
            ok = "installed" if src.installed(a.packages_root) else "MISSING"
            print(f"{name:<22}{kind:<20}{ok:<11}{' '.join(src.packages)}")
        return 0
    try:
        dc.build_demo_corpus(a.out, n_train=a.n_train, n_dev=a.n_dev, n_test=a.n_test, synthetic=a.synthetic,
                             pseudo_speakers=a.pseudo_speakers, seed=a.seed, packages_root=a.packages_root,
                             force=a.force, sources=a.sources, max_minutes_per_speaker=a.max_minutes_per_speaker,
                             num_workers=a.num_workers)
    except ValueError as exc:  # MissingPackageError, bad --sources, too few voices
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
