"""chorus: a decentralized audio-generation network (TTS, voice cloning, music)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("chorus")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"
