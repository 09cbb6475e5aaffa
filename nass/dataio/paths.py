"""File names derived from data: utterance IDs as safe file names, paths kept inside their folder.

Used by the evaluation (separated examples), the correction triplets and the CLI; here in
``nass.dataio`` so that data code never imports the evaluation.
"""

import hashlib
import os
import re


def safe_name(utt_id):
    """A file-name-safe version of an utterance ID that cannot leave its folder.

    An ID made of ``[A-Za-z0-9._-]`` only, not starting with a dot and at most 120
    characters is returned unchanged. Any other ID is changed — characters outside that
    set become ``_``, leading dots ``_``, the result cut to 100 characters — and gets
    ``-`` and 10 hex digits of the SHA-1 of the original ID appended, so that two IDs
    that differ (``a b`` and ``a_b``, or long IDs that differ only after the cut, such as
    the ``_s1``/``_s2`` of a long 3-speaker demo-corpus or custom-folder ID) never share a
    file name.

    Example
    -------
    >>> safe_name("spk1-utt-2_spk2-utt-7"), safe_name("")
    ('spk1-utt-2_spk2-utt-7', 'utt')
    >>> safe_name("../../etc/passwd")
    '___.._etc_passwd-936d7c04cd'
    >>> safe_name("a b") != safe_name("a_b")
    True
    """
    utt_id = str(utt_id)
    if not utt_id:
        return "utt"
    if len(utt_id) <= 120 and re.fullmatch(r"[A-Za-z0-9_-][A-Za-z0-9._-]*", utt_id):
        return utt_id
    name = re.sub(r"[^A-Za-z0-9._-]", "_", utt_id)[:100]
    name = re.sub(r"^\.+", lambda m: "_" * len(m.group(0)), name)
    return f"{name}-{hashlib.sha1(utt_id.encode('utf-8')).hexdigest()[:10]}"


def path_inside(folder, name):
    """``folder/name``, refusing anything that would resolve outside ``folder``.

    Raises
    ------
    ValueError
        If ``name`` resolves outside ``folder`` (``../``, an absolute path) or to it.

    Example
    -------
    >>> path_inside("/tmp/out", "a.wav")
    '/tmp/out/a.wav'
    >>> path_inside("/tmp/out", "../x")
    Traceback (most recent call last):
    ...
    ValueError: output name '../x' would escape /tmp/out
    """
    root = os.path.realpath(folder)
    path = os.path.realpath(os.path.join(root, name))
    if os.path.commonpath([root, path]) != root or path == root:
        raise ValueError(f"output name {name!r} would escape {folder}")
    return path
