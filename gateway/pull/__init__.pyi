"""Typed surface of ``gateway.pull`` (loaded lazily by ``__init__.py``)."""

from .base import Page as Page
from .base import PullAuthError as PullAuthError
from .base import PullConnector as PullConnector
from .base import PullError as PullError
from .config import PullOptions as PullOptions
from .config import pull_options as pull_options
from .runner import PullReport as PullReport
from .runner import PullRunner as PullRunner
from .runner import pull_tasks as pull_tasks
