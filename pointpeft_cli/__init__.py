"""pointpeft: parameter-efficient fine-tuning of pre-trained 3D point-cloud transformers."""

__version__ = "0.1.0.dev0"
