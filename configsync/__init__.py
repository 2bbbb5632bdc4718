"""ConfigSync: an event-sourced, versioned configuration store for microservices."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("configsync")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"
