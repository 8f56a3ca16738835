"""The one base class of the errors a user can cause and fix (a bad config or prompt file, a stage
run too early, a model that cannot load, caps that cannot be met...). Each room raises its own
subclass; the command line prints the message of any of them, without a traceback, and exits 2."""


class PersynError(Exception):
    """An error whose message says what is wrong and what to do; see the module docstring."""
