"""Typed surface of ``gateway.identity`` (loaded lazily by ``__init__.py``)."""

from .em import Estimate as Estimate
from .em import blocked_patterns as blocked_patterns
from .em import estimate as estimate
from .em import estimated_rules as estimated_rules
from .em import estimated_yaml as estimated_yaml
from .engine import REVIEW_TASK_CODE as REVIEW_TASK_CODE
from .engine import REVIEW_TASK_SYSTEM as REVIEW_TASK_SYSTEM
from .engine import IdentityEngine as IdentityEngine
from .engine import review_task_id as review_task_id
from .index import CandidateIndex as CandidateIndex
from .normalise import ESTIMATED_BIRTHDATE as ESTIMATED_BIRTHDATE
from .normalise import Features as Features
from .normalise import features as features
from .normalise import fold as fold
from .rules import FIELD_LEVELS as FIELD_LEVELS
from .rules import IdentityRuleError as IdentityRuleError
from .rules import Rules as Rules
from .rules import load_rules as load_rules
from .rules import load_rules_dir as load_rules_dir
from .scoring import Comparison as Comparison
from .scoring import Grade as Grade
from .scoring import compare as compare
