"""The error of bad input data, shared by preparation, loading, training and tools."""


class DataError(ValueError):
    """Bad input data: a missing, unreadable or inconsistent file."""
