"""Typed surface of ``gateway.backfill`` (loaded lazily by ``__init__.py``)."""

from .inputs import FORMATS as FORMATS
from .inputs import BackfillInputError as BackfillInputError
from .inputs import Input as Input
from .inputs import expand as expand
from .inputs import split as split
from .runner import DONE as DONE
from .runner import BackfillReport as BackfillReport
from .runner import BackfillRunner as BackfillRunner
from .runner import position_key as position_key
