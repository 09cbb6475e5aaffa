"""Reading a loaded YAML without soft defaults: a key the code reads is in the YAML, or it fails naming it.

Every recipe YAML carries every key the training code reads (``tools/make_recipe_hparams.py``
writes them, with the papers' values and a comment); a misspelt or missing key is an
error here, never a silent default.
"""

_MISSING = object()


def require(hparams, key):
    """``hparams[key]`` (a dict or SpeechBrain's ``SimpleNamespace`` of hparams), or a clear error.

    Parameters
    ----------
    hparams : dict or object
    key : str

    Returns
    -------
    object
        The value (``None`` is a value: ``test_split: null`` means no test split).

    Raises
    ------
    KeyError
        The key is absent, named with the fix.

    Example
    -------
    >>> require({"seed": 3}, "seed")
    3
    >>> require({"sed": 3}, "seed")
    Traceback (most recent call last):
    ...
    KeyError: "the YAML has no 'seed' key, which this code reads: add it (the recipe YAMLs written by tools/make_recipe_hparams.py carry every key; see their comments for the values)"
    """
    if isinstance(hparams, dict):
        value = hparams.get(key, _MISSING)
    else:
        value = getattr(hparams, key, _MISSING)
    if value is _MISSING:
        raise KeyError(
            f"the YAML has no {key!r} key, which this code reads: add it (the recipe YAMLs written by "
            "tools/make_recipe_hparams.py carry every key; see their comments for the values)"
        )
    return value
