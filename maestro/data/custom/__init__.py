"""Your own dataset: GeoTIFF folders per modality, a patch CSV and a nomenclature YAML.

``config`` (the data config YAML, loaded without rasterio), ``reader`` (:class:`CustomReader`,
registered for ``shards build --dataset custom``) and ``toy`` (``shards toy --dataset custom``).
"""
