"""Subscriptions: the graphene-style ``Subscription`` class and its fanout runtime."""

from service.subscriptions.subscription import SKIP, Subscription, SubscriptionStream

__all__ = ["SKIP", "Subscription", "SubscriptionStream"]
