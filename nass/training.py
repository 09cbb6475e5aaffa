"""Old home of the separation runner: every name is now in :mod:`nass.runner` (above both Brains).

Kept so that ``from nass.training import run_separation`` (and the helpers) keeps working;
nothing in ``nass/`` imports this module. The precision helpers are in :mod:`nass.hparams`.
"""

from nass.hparams import cpu_has_bf16, resolve_auto_precision_in, resolve_precision  # noqa: F401
from nass.runner import (  # noqa: F401
    _device_of,
    _print_help,
    _report_init,
    _resolve_auto_precision,
    _step_limit_into_yaml,
    apply_init_from,
    build_datasets,
    check_class_overrides,
    check_writable,
    copy_matching_weights,
    evaluate_best,
    export_trained_model,
    freeze_encoder,
    load_hparams,
    prepare_manifests,
    run_separation,
    spread_subset,
    yaml_keys_help,
)
