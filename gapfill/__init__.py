"""``gapfill``: cloud removal: train the pretrained MAE to restore cloudy Sentinel-2 dates, then score it."""
