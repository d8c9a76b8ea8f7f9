"""Run configuration: dataclass schema, presets and overrides."""
