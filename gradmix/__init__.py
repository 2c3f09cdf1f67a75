"""gradmix: attribution-based mixing (GradMix) and the methods it is compared with, for open-set recognition.

The package's version lives here only; ``pyproject.toml`` reads it (``[tool.setuptools.dynamic]``).
"""
__version__ = "0.1.0"
