"""Large-area inference: a fine-tuned MAESTRO segmenter over a whole zone -> one seamless GeoTIFF map.

``cli`` parses the command line; ``options`` checks the options and paths before anything heavy
loads; ``model`` loads the network and what it expects; ``zone`` finds and
checks the zone rasters; ``tiling`` lays the model's footprint over the output grid; ``reading`` turns
one tile into a model sample; ``blending`` accumulates window-weighted logits strip by strip;
``writing`` streams strips to temporary files and publishes the Cloud-Optimised GeoTIFFs;
``engine`` runs it all.
"""
