"""Image-classification inference served by Celery workers.

`celery -A inference worker --model resnet18` finds the app here.
"""

from inference import worker  # noqa: F401  registers --model handling and `inspect model_info` (no torch)
from inference.celery_app import app

__all__ = ["app"]
