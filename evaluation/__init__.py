"""Scoring predictions as the INSTANCE 2022 organisers did, ranking runs, and the HTML report.

A tool beside the shipped core: it imports :mod:`model` (reading images), never the other way round.
"""
