"""Command-line layer: parse, call the engine, render, map errors to exit codes."""
