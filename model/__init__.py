"""ICH segmentation library: reading, windowing, networks, prediction, post-processing, writing."""
