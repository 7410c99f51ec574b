"""The one exception type of `gold.data`."""


class DatasetError(ValueError):
    """Bad dataset input: unknown name, missing or corrupt file, wrong shape/classes/counts.

    The message always names the dataset or file involved and what was expected.
    """
