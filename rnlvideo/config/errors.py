"""Errors of the config layer; every message names the config key at fault."""


class ConfigError(ValueError):
    """A config key is unknown, or its value has the wrong type or is out of range."""


class UntrustedTargetError(ConfigError):
    """A ``_target_`` names code outside rnlvideo's builders and the caller did not trust it."""


class DatasetNotFoundError(FileNotFoundError):
    """A configured dataset is not on disk; the message says how to prepare it."""
