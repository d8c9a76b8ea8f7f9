"""Point-PEFT modules: prompt, geometry-aware adapter, injection and trainability."""
