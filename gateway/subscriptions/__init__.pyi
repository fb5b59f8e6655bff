"""Typed surface of ``gateway.subscriptions`` (loaded lazily by ``__init__.py``)."""

from .bundles import Event as Event
from .bundles import StatusView as StatusView
from .bundles import notification_bundle as notification_bundle
from .config import DESTINATION as DESTINATION
from .config import SubscriptionSettings as SubscriptionSettings
from .config import subscription_destination as subscription_destination
from .connector import RestHookConnector as RestHookConnector
from .feed import SubscriptionFeed as SubscriptionFeed
from .service import SubscriptionService as SubscriptionService
from .spec import SubscriptionSpec as SubscriptionSpec
from .spec import read_spec as read_spec
from .stored import resource_of as resource_of
from .topics import BY_BASIC_ID as BY_BASIC_ID
from .topics import BY_URL as BY_URL
from .topics import TOPICS as TOPICS
from .topics import Topic as Topic
