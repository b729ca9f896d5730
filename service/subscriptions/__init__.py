"""Subscriptions: the graphene-style ``Subscription`` class and the worker's ``Fanout``."""

from service.subscriptions.fanout import Fanout
from service.subscriptions.subscription import SKIP, Subscription, SubscriptionStream

__all__ = ["SKIP", "Fanout", "Subscription", "SubscriptionStream"]
