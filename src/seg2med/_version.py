"""The package version, in a ground-floor module every layer may import (the package front imports the API)."""

__version__ = "0.1.0"
