"""MAESTRO preprocessing: raw sample -> model sample (configuration, date selection, transform).

``config`` says what is fed to the network, ``dates`` picks and encodes the time steps,
``transform`` validates a raw sample and assembles the model sample.
"""

from maestro.data.preprocess.config import (
    EvalOffset,
    NanPolicy,
    PreprocessConfig,
    ResolvedInput,
    build_preprocess_config,
)
from maestro.data.preprocess.dates import (
    bin_offset,
    date_times,
    dates_of_times,
    median_distance,
    nanmedian_over_axis1,
    pad_series,
    reference_date,
    select_dates,
)
from maestro.data.preprocess.device import scale_batch
from maestro.data.preprocess.transform import (
    MaestroTransform,
    RngLike,
    check_finite,
    fill_non_finite,
    flagged_pixels,
    mask_companion,
    preprocess_input,
    preprocess_sample,
    scale_inplace,
    select_bands,
)

__all__ = [
    "EvalOffset",
    "MaestroTransform",
    "NanPolicy",
    "PreprocessConfig",
    "ResolvedInput",
    "RngLike",
    "bin_offset",
    "build_preprocess_config",
    "check_finite",
    "date_times",
    "dates_of_times",
    "fill_non_finite",
    "flagged_pixels",
    "mask_companion",
    "median_distance",
    "nanmedian_over_axis1",
    "pad_series",
    "preprocess_input",
    "preprocess_sample",
    "reference_date",
    "scale_batch",
    "scale_inplace",
    "select_bands",
    "select_dates",
]
