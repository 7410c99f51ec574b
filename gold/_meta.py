"""Project metadata kept in one place.

``REPOSITORY_URL``: where gold's source is hosted. The notebooks' install cell clones
it when a notebook is opened outside a checkout (e.g. on Colab); it is copied into the
notebooks by ``notebooks/build_notebooks.py``. Set it here once, then regenerate the
notebooks (``python notebooks/build_notebooks.py --execute``).
"""

REPOSITORY_URL = "https://github.com/gold-distill/gold"
