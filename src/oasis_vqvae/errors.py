"""Errors a user can fix: the CLI prints them as one line and exits non-zero."""


class OasisError(Exception):
    """Base of the errors caused by input, not by a bug: config, data, environment."""


class ConfigError(OasisError):
    """params.yaml or a --set override is wrong."""


class DataError(OasisError):
    """An input file or data source is missing, malformed or unsafe."""


class TrainingError(OasisError):
    """Training failed in a way that a change of params (learning rate, seed) fixes."""
