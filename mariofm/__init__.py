"""mariofm: flow matching that learns to generate Super Mario Bros. gameplay video, line by line."""

__version__ = "0.1.0"
