"""mlfactory: from raw data to a monitored classification model in production."""

__version__ = "0.1.0"
