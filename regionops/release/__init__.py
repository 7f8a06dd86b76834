"""The multi-region release: static asset publishing (assets) and health gates (health).

Its data (metrics samples, gate thresholds and measurements) is in :mod:`regionops.model.release`.
"""
