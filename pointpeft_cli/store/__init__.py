"""Asset registry, on-disk cache and downloads."""
