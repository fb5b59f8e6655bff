"""Patient identity: matching every Patient written against the stored ones, linking the
same person's records (``Patient.link``), review tasks for doubtful pairs, ``Patient/$match``.

Modules: ``normalise`` (compared values), ``blocking`` (candidate keys), ``scoring``
(deterministic rules and the Fellegi–Sunter weight), ``rules`` (the rule file), ``index``
(candidates in memory), ``engine`` (the change-feed follower that writes links).
"""

from gateway.identity.engine import REVIEW_TASK_CODE, REVIEW_TASK_SYSTEM, IdentityEngine, review_task_id
from gateway.identity.index import CandidateIndex
from gateway.identity.normalise import Features, features, fold
from gateway.identity.rules import IdentityRuleError, Rules, load_rules, load_rules_dir
from gateway.identity.scoring import Comparison, Grade, compare

__all__ = [
    "REVIEW_TASK_CODE", "REVIEW_TASK_SYSTEM", "CandidateIndex", "Comparison", "Features", "Grade",
    "IdentityEngine", "IdentityRuleError", "Rules", "compare", "features", "fold", "load_rules", "load_rules_dir",
    "review_task_id",
]
