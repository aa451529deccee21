"""Where the MovieLens 100K files are looked for when no path is given (one place for the config
and the loader's error message)."""

from __future__ import annotations

import os
from pathlib import Path

#: Where the MovieLens 100K files are looked for when no path is given: ``$ML100K_DIR``, else an
#: ``ml-100k`` folder in the working directory (the name the GroupLens zip unpacks to).
ML100K_ENV_VAR = "ML100K_DIR"
ML100K_FOLDER = "ml-100k"
ML100K_URL = "https://files.grouplens.org/datasets/movielens/ml-100k.zip"


def default_movielens_dir() -> Path:
    return Path(os.environ.get(ML100K_ENV_VAR) or ML100K_FOLDER)
