"""The one error type of bad input: a configuration value, a path or a file that cannot be used.

Every layer raises it (data, model checks, run loading, callbacks, analyses); command lines turn it
into one line on stderr and exit code 2 before any work starts.
"""


class ConfigError(ValueError):
    """A bad configuration value, path or file, reported before any work starts."""
