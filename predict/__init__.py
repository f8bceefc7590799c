"""Large-area inference: a fine-tuned MAESTRO segmenter over a zone, or a country, -> seamless maps.

``cli`` parses the command line; ``options`` checks the options and paths before anything heavy
loads; ``model`` loads the network and what it expects; ``zone`` finds and
checks the zone rasters; ``tiling`` lays the model's footprint over the output grid; ``reading`` turns
one tile into a model sample, which ``loader`` does in worker processes; ``blending`` accumulates window-weighted logits strip by strip;
``writing`` streams strips to temporary files and publishes the Cloud-Optimised GeoTIFFs;
``engine`` maps work units on one device; ``units`` splits zones into units and shares them among
ranks (``ranks``: torchrun or srun); ``records`` keeps what is done for ``--resume``; ``mosaic``
builds the VRTs, COG and STAC Items; ``report`` the timings; ``run`` drives it all.
"""
