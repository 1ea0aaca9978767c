"""alexctl: reproduce and extend AlexNet (Krizhevsky, Sutskever, Hinton, NIPS 2012)."""

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _version

try:
    __version__ = _version("alexctl")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+source"
