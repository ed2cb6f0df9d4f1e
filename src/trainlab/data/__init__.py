"""Datasets: from a name or path to uint8 tensors, plus deterministic stratified splits."""

from trainlab.data.augment import BatchAugmenter, default_augment, parse_augment, resolve_augment
from trainlab.data.batches import (
    BatchLoader,
    background_of,
    channel_stats,
    normalize,
    normalize_uint8,
)
from trainlab.data.preview import augment_grid, augment_preview_counts, save_augment_preview
from trainlab.data.registry import DatasetInfo, fetch_dataset, list_datasets, load_dataset
from trainlab.data.sources import data_root
from trainlab.data.splits import (
    carve_validation,
    kfold_validation,
    stratified_indices,
    subsample,
)
from trainlab.data.types import DataKind, DatasetBundle, ImageSplit

__all__ = [
    "BatchAugmenter",
    "BatchLoader",
    "DataKind",
    "DatasetBundle",
    "DatasetInfo",
    "ImageSplit",
    "augment_grid",
    "augment_preview_counts",
    "background_of",
    "carve_validation",
    "channel_stats",
    "data_root",
    "default_augment",
    "fetch_dataset",
    "kfold_validation",
    "list_datasets",
    "load_dataset",
    "normalize",
    "normalize_uint8",
    "parse_augment",
    "resolve_augment",
    "save_augment_preview",
    "stratified_indices",
    "subsample",
]
