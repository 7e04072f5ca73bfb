"""vitedu: the library of the executable book on Vision Transformers."""

__version__ = "0.1.0"

from . import check, data, results, train, viz  # noqa: E402
from .budget import BUDGETS, Budget, budget  # noqa: E402
from .env import Session, in_colab, setup  # noqa: E402
from .models import create_model, list_models  # noqa: E402

__all__ = ["__version__", "check", "data", "results", "train", "viz", "BUDGETS", "Budget", "budget", "Session",
           "in_colab", "setup", "create_model", "list_models"]
