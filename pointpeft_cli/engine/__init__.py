"""Training, evaluation, memory bank and runtime helpers."""
