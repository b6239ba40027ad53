"""Realistic head-CT data: real or phantom anatomy with inserted haemorrhages, in INSTANCE layout."""

from synthetic.dataset import LABEL_FRACTION, generate_case

__all__ = ["LABEL_FRACTION", "generate_case"]
