"""netc: compile `.net` neural-network files to native training code and use them from Python."""

__version__ = "0.1.0"
