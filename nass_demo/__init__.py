"""The demo application of nass: its corpus and its listening page (built on the library, never imported by it).

* :mod:`.corpus` -- the demo corpus: real recordings shipped in Debian packages (a registry
  of packages and voices), prompt processing, optional TTS voices (through subprocess),
  babble, and a Libri2Mix-shaped noisy corpus (``tools/build_demo_corpus.py``,
  ``docs/demo_corpus.md``).
* :mod:`.page` -- the static listening page (``tools/make_demo_page.py``, ``docs/demo_page.md``),
  rendered with jinja2 from ``templates/page.html``.

Only the demo tools (``tools/build_demo_corpus.py``, ``tools/make_demo_page.py``,
``tools/run_demo.py``, ``bench/run_all.py``) and their tests import this package; no module
of ``nass`` does (``tests/test_import_layers.py``).
"""
