"""FLAIR-HUB data: on-disk layout, reader, preprocessing, collation and the toy dataset."""
