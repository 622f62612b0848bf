"""Datasets in the BIGRec / D3 / IGD CSV format and a builder from MovieLens (RecBole files)."""

from igdbeam.data.bigrec_csv import (
    REQUIRED_COLUMNS,
    Catalog,
    DataFormatError,
    Dataset,
    Sample,
    load_dataset,
    read_item_info,
    read_samples,
    write_dataset,
)
from igdbeam.data.movielens import BuildReport, build_movielens, split_by_time

__all__ = [
    "REQUIRED_COLUMNS",
    "BuildReport",
    "Catalog",
    "DataFormatError",
    "Dataset",
    "Sample",
    "build_movielens",
    "load_dataset",
    "read_item_info",
    "read_samples",
    "split_by_time",
    "write_dataset",
]
