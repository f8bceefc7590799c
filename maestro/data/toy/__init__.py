"""Built-in toy dataset: a small synthetic FLAIR-HUB tree with learnable, cross-sensor signal.

Real FLAIR-HUB cannot be downloaded on the development machines, so everything downstream (reader,
shards, pretraining, fine-tuning, metrics) is exercised on this dataset instead. It is written in
the *exact* real layout (:mod:`maestro.data.layout`, :mod:`maestro.data.metadata`): georeferenced
Lambert-93 GeoTIFFs for every modality of the registry, GeoPackage date tables and split CSVs,
with train / val / test in different domains like the official split.

The content is simulated from one latent scene per patch so that the sensors agree with each
other and the labels carry the kind of signal the real data has:

* land cover (COSIA) comes from spatially coherent segments (warped Voronoi cells, field grids,
  roads, buildings, pools); every class has its own spectrum, texture and height above ground,
  so aerial imagery + DEM predict it;
* crop parcels (LPIS) are large fields whose class shows mainly in the *phenology* seen by
  Sentinel-2 / Sentinel-1 (each crop has its own green-up / senescence curve), while their aerial
  look is shared by most crops, so a model needs the time series for LPIS;
* Sentinel-2 has a variable number of dates, clouds (flagged in the mask, bright reflectance)
  and rare snow; Sentinel-1 is speckled sigma0 following vegetation; SPOT is the aerial
  reflectance at 1.6 m; historical imagery is a blurred, grainy panchromatic version.

Generation is deterministic for a seed: each patch draws from ``default_rng((seed, 0, index))`` and
each ROI's terrain from ``default_rng((seed, 1, roi))``.
"""

from maestro.data.toy.classes import LPIS_HIERARCHY
from maestro.data.toy.dataset import ToySummary, write_toy_dataset
from maestro.data.toy.plan import SPLIT_DOMAINS

__all__ = ["LPIS_HIERARCHY", "SPLIT_DOMAINS", "ToySummary", "write_toy_dataset"]
