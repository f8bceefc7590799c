"""Every dataset reader and toy generator of the suite, registered.

Importing this module imports each reader and toy module, whose factories attach themselves to
their row of :data:`maestro.datasets.DATASETS` (``@register_reader``, ``@register_toy``, and
``@register_configured`` for the custom dataset's data config). The
registry never imports a reader, so whatever may open any dataset goes through here: ``shards
build --dataset`` and ``shards toy --dataset``::

    from maestro.data import zoo
    from maestro.datasets import ReaderOptions, get_dataset

    reader = zoo.open_reader("flair2", ReaderOptions(root, "train", ("aerial", "s2", "s2_mask", "flair2")))
"""

from __future__ import annotations

from maestro.data import flairhub
from maestro.data.custom import config as custom_config
from maestro.data.custom import reader as custom_reader
from maestro.data.custom import toy as custom_toy
from maestro.data.flair2 import reader as flair2_reader
from maestro.data.flair2 import toy as flair2_toy
from maestro.data.toy import dataset as flairhub_toy
from maestro.datasets import DatasetReader, ReaderOptions, ToyGenerator, get_dataset

MODULES = (flairhub, flairhub_toy, flair2_reader, flair2_toy, custom_config, custom_reader, custom_toy)
"""The modules whose import registers the readers, toy generators and data config loaders."""


def open_reader(dataset: str, options: ReaderOptions) -> DatasetReader:
    """One split of ``dataset`` (a registry key), read by its registered reader."""
    return get_dataset(dataset).open_reader(options)


def toy_generator(dataset: str) -> ToyGenerator:
    """The registered toy generator of ``dataset``."""
    return get_dataset(dataset).toy
