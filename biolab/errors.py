"""The one error type of bad input: a configuration value, a path or a file that cannot be used.

Every layer raises it (data, model checks, run loading, callbacks, analyses); command lines turn it
into one line on stderr and exit code 2 before any work starts.
"""


class ConfigError(ValueError):
    """A bad configuration value, path or file, reported before any work starts."""


class RunError(ConfigError):
    """A run that cannot go on: a checkpoint that cannot be written (full disk, read-only directory),
    a loss or weights that became NaN or infinite.

    Raised once the run has started, never swallowed: the run stops without a summary.json (it is
    not marked completed) and its last good checkpoint is kept. A ConfigError subclass, so command
    lines report it the same way: one line on stderr, exit code 2.
    """
