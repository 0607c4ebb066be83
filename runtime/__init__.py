"""netc: compile `.net` neural-network files to native training code and use them from Python."""

from .model import History, Model, compile, load

__version__ = "0.1.0"
__all__ = ["History", "Model", "compile", "load"]
