"""seg2med: label maps -> physics-based priors -> synthetic CT / MR."""
__version__ = "0.1.0"
