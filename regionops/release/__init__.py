"""The multi-region release: data (model), static asset publishing (assets)."""
