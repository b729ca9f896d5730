"""The graphene-style ``Subscription`` class, in the manner of DjangoChannelsGraphqlWs.

```python
class OnNewChatMessage(Subscription):
    class Arguments:
        chatroom = graphene.String(required=True)

    Output = ChatMessage            # or declare fields on the class itself

    def subscribe(root, info, chatroom):          # sync or async: the groups to join
        return [chatroom]

    def publish(payload, info, chatroom):         # sync or async: the value, or SKIP
        return payload

    def unsubscribed(root, info, chatroom):       # sync or async: the subscription ended
        ...

class Subscriptions(graphene.ObjectType):
    on_new_chat_message = OnNewChatMessage.Field()

await OnNewChatMessage.broadcast(group="lobby", payload={...})   # from async code
OnNewChatMessage.broadcast(group="lobby", payload={...})         # from a thread with no loop
await OnNewChatMessage.unsubscribe(group="lobby")                # ends them; clients get complete
```

Groups are scoped to the class: group ``g`` of ``OnNewChatMessage`` is the broker channel
``<module>.OnNewChatMessage:g``; the class's default group (``group=None``) is always joined.
Each subscriber has its own bounded queue (``notification_queue_limit``; on overflow the oldest
notification is dropped and counted) and one consumer, so notifications reach it in publish order
even when ``publish`` takes variable time.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

import graphene
from graphene.types.objecttype import ObjectTypeOptions
from graphene.types.utils import yank_fields_from_attrs

from service.engine.executor import DELIVERED, PLAIN_VALUES
from service.subscriptions import fanout as fanouts
from service.subscriptions.fanout import NOTIFY, UNSUBSCRIBE, Fanout

log = logging.getLogger("service.subscriptions")


#: Event ids each subscriber remembers to drop a duplicate (outbox events carry one).
SEEN_EVENT_IDS = 1024


class _Skip:
    __slots__ = ()

    def __repr__(self) -> str:
        return "Subscription.SKIP"


SKIP = _Skip()


async def _maybe_await(value: Any) -> Any:
    if inspect.isawaitable(value):
        return await value
    return value


class _Published:
    """A queued event whose ``publish`` already ran on the direct path and returned an
    awaitable (``value``), awaited by ``__anext__`` in turn."""

    __slots__ = ("payload", "sent_at", "value")

    def __init__(self, payload: Any, value: Any, sent_at: float) -> None:
        self.payload = payload
        self.value = value
        self.sent_at = sent_at


class _Failed:
    """A queued event whose ``publish`` or execution raised on the direct path: ``__anext__``
    raises ``error`` in turn, as if it had run there."""

    __slots__ = ("error",)

    def __init__(self, error: Exception) -> None:
        self.error = error


def _discard(item: Any) -> None:
    """Close the coroutine a dropped queue item holds (an async ``publish`` or execution that
    already started on the direct path), so it is not left never awaited."""
    pending = item.value if type(item) is _Published else getattr(item, "result", None)
    if inspect.iscoroutine(pending):
        pending.close()


class SubscriptionOptions(ObjectTypeOptions):
    arguments: dict[str, Any] | None = None
    output: Any = None


class SubscriptionField(graphene.Field):
    """A ``graphene.Field`` whose subscribe resolver is the ``Subscription`` class's stream."""

    def __init__(self, subscription: type[Subscription], *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.subscription = subscription

    def wrap_subscribe(self, parent_subscribe: Any) -> Callable[..., Awaitable[Any]]:
        return self.subscription._start_stream


class Subscription(graphene.ObjectType):
    """Base class; see the module docstring."""

    SKIP: ClassVar[_Skip] = SKIP
    notification_queue_limit: ClassVar[int | None] = None
    #: Shared execution: ``True`` says the output's resolvers do not depend on who subscribed
    #: (nothing read from ``info.context`` or from the subscription's arguments beyond what
    #: ``publish`` already applied). Then, for one event in one worker, subscribers whose
    #: ``publish`` returned the same value and who run the same document with the same
    #: variables share one execution and one encoded payload. ``False`` (the default, the safe
    #: side): each subscriber's event is executed for it alone.
    share_results: ClassVar[bool] = False

    class Meta:
        abstract = True

    @classmethod
    def __init_subclass_with_meta__(
        cls,
        output: Any = None,
        arguments: dict[str, Any] | None = None,
        _meta: SubscriptionOptions | None = None,
        **options: Any,
    ) -> None:
        if _meta is None:
            _meta = SubscriptionOptions(cls)
        output = output or getattr(cls, "Output", None)
        if arguments is None:
            holder = getattr(cls, "Arguments", None)
            arguments = (
                yank_fields_from_attrs(vars(holder), _as=graphene.Argument) if holder else {}
            )
        _meta.arguments = arguments
        _meta.output = output
        super().__init_subclass_with_meta__(_meta=_meta, **options)

    # --- user hooks: override with (static) functions; any keyword arguments of the field -----
    #: ``subscribe(root, info, **args)``: the groups (iterable of str) to join besides the
    #: default group. Sync or async.
    subscribe: ClassVar[Callable[..., Any]] = staticmethod(lambda root, info, **kwargs: ())
    #: ``publish(payload, info, **args)``: the value to send, or ``Subscription.SKIP``.
    publish: ClassVar[Callable[..., Any]] = staticmethod(lambda payload, info, **kwargs: payload)
    #: ``result_key(info, **args)``: with ``share_results``, subscribers share an execution only
    #: when their keys are equal too: return what the output does depend on (a role, a locale).
    result_key: ClassVar[Callable[..., Any]] = staticmethod(lambda info, **kwargs: None)
    #: ``unsubscribed(root, info, **args)``: the subscription ended, for any reason.
    unsubscribed: ClassVar[Callable[..., Any]] = staticmethod(lambda root, info, **kwargs: None)

    # --- schema wiring ---------------------------------------------------------------------
    @classmethod
    def Field(
        cls,
        name: str | None = None,
        description: str | None = None,
        deprecation_reason: str | None = None,
        required: bool = False,
    ) -> SubscriptionField:
        output = cls._meta.output or cls
        return SubscriptionField(
            cls,
            output,
            args=cls._meta.arguments,
            resolver=_identity,
            name=name,
            description=description or cls._meta.description,
            deprecation_reason=deprecation_reason,
            required=required,
        )

    @classmethod
    def group_key(cls, group: str | None = None) -> str:
        """The broker channel name of ``group`` for this class."""
        base = f"{cls.__module__}.{cls.__qualname__}"
        return base if group is None else f"{base}:{group}"

    @classmethod
    async def _start_stream(cls, root: Any, info: Any, **kwargs: Any) -> SubscriptionStream:
        fanout = fanouts.attached()
        if fanout is None:
            raise RuntimeError(
                f"{cls.__name__} needs a server on this event loop: serve(), build_server() or "
                "asgi_app() attaches the fanout that subscriptions join"
            )
        stream = SubscriptionStream(cls, root, info, kwargs, fanout)
        await stream.start()
        return stream

    # --- sending -------------------------------------------------------------------------
    @classmethod
    def broadcast(cls, group: str | None = None, payload: Any = None) -> Any:
        """Send ``payload`` to every subscriber of ``group`` (default group when ``None``), in
        every worker on every host. In async code, ``await`` the result; in a thread with no
        running loop it publishes before returning. Raises ``BrokerUnavailable`` when the
        broker (Redis) cannot take the message; it never drops it silently."""
        return _send(cls.group_key(group), {"k": NOTIFY, "p": payload})

    @classmethod
    def event(cls, group: str | None = None, payload: Any = None) -> tuple[str, dict[str, Any]]:
        """``(channel, message)`` of a ``broadcast(group, payload)``, for code that hands the
        event to another channel of delivery (the transactional outbox:
        ``await service.db.outbox.append(tx, *OnNewChatMessage.event("lobby", payload))``)."""
        return cls.group_key(group), {"k": NOTIFY, "p": payload}

    @classmethod
    def unsubscribe(cls, group: str | None = None) -> Any:
        """End every subscription in ``group`` from the server side; clients get ``complete``.
        Same sync/async rules as ``broadcast``."""
        return _send(cls.group_key(group), {"k": UNSUBSCRIBE})


def _identity(root: Any, info: Any, **kwargs: Any) -> Any:
    return root


def _send(key: str, message: dict[str, Any]) -> Any:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return fanouts.publish_from_thread(key, message)
    return fanouts.publish(key, message)


class SubscriptionStream:
    """One subscriber: joined groups, a bounded queue, and the async iterator graphql-core reads."""

    def __init__(
        self,
        cls: type[Subscription],
        root: Any,
        info: Any,
        kwargs: dict[str, Any],
        fanout: Fanout,
    ):
        self.cls = cls
        self.root = root
        self.info = info
        self.kwargs = kwargs
        self.fanout = fanout
        self.broker = fanout.broker
        self.recorder = fanout.recorder
        self.limit = max(1, cls.notification_queue_limit or fanout.queue_limit)
        #: When the event last returned by ``__anext__`` was broadcast (unix seconds); the
        #: engine copies it into that event's ``Outcome`` for the fanout-lag metric.
        self.sent_at: float | None = None
        #: With ``share_results`` (see the engine's ``ResponseStream``): what this subscriber's
        #: results depend on besides the event (its class and ``result_key``), what names the
        #: current event's result, and the objects whose ids that holds, kept alive with it.
        self.share_base: tuple[Any, ...] | None = (
            (cls, cls.result_key(info, **kwargs)) if cls.share_results else None
        )
        self.share_key: tuple[Any, ...] | None = None
        self.share_pins: tuple[Any, ...] | None = None
        #: ``(payload, sent_at)`` per event; from the direct path also ``_Published``,
        #: ``_Failed`` or the engine's ``Executed``.
        self.queue: deque[Any] | None = None  # made on first use (see ``seen_ids``)
        # Made on first use: most subscriptions never queue an event or see an event id, and
        # an empty deque costs 760 bytes (memory per idle subscriber counts, by the 10,000).
        self.seen_ids: set[str] | None = None
        self.seen_order: deque[str] | None = None
        self.keys: list[str] = []
        self.waiter: asyncio.Future[None] | None = None
        #: The consumer's direct delivery (``ResponseStream.direct``), when it has one.
        self.direct: Callable[[Any, float | None, Any, Any], Any] | None = None
        self.ended = False
        self.closed = False
        self.joined = False

    async def start(self) -> None:
        groups = await _maybe_await(self.cls.subscribe(self.root, self.info, **self.kwargs))
        if isinstance(groups, str):
            groups = [groups]
        keys = [self.cls.group_key(None)]
        for group in groups or ():
            key = self.cls.group_key(str(group))
            if key not in keys:
                keys.append(key)
        try:
            for key in keys:
                await self.broker.join(key, self._on_message)
                self.keys.append(key)
        except BaseException:
            # Cancelled (the connection ended) or the broker failed: `subscribe` ran, so
            # leave what was joined and run `unsubscribed`, as for any other end.
            await self.aclose()
            raise
        self.joined = True
        self.recorder.subscriptions(1)

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _on_message(self, group: str, message: Any, sent_at: float) -> None:
        if self.ended or self.closed:
            return
        kind = message.get("k") if isinstance(message, dict) else None
        event_id = message.get("e") if kind is not None else None
        if event_id is not None:
            # An event relayed from the outbox may be published twice (a relay that died
            # between publishing and deleting it): deliver each event id once.
            seen, order = self.seen_ids, self.seen_order
            if seen is None or order is None:
                seen, order = self.seen_ids, self.seen_order = set(), deque()
            elif event_id in seen:
                return
            seen.add(event_id)
            order.append(event_id)
            if len(order) > SEEN_EVENT_IDS:
                seen.discard(order.popleft())
        if kind == UNSUBSCRIBE:
            self.ended = True
        elif kind == NOTIFY:
            waiter = self.waiter
            if (
                self.direct is not None
                and not self.queue
                and waiter is not None
                and not waiter.done()
            ):
                # The consumer waits with nothing queued before this event: publish, execute
                # and write it now, in the broker's dispatch pass (no task switch); only what
                # cannot be finished here is queued, and the consumer woken for it.
                item = self._direct(message.get("p"), sent_at)
                if item is None:
                    return
            else:
                item = (message.get("p"), sent_at)
            queue = self.queue
            if queue is None:
                queue = self.queue = deque()
            elif len(queue) >= self.limit:
                _discard(queue.popleft())
                self.recorder.notification_dropped()
            queue.append(item)
        else:
            return
        self._wake()

    def _direct(self, payload: Any, sent_at: float) -> Any:
        """``publish`` and the consumer's ``direct`` for one event; ``None`` when it is done
        (delivered or skipped), else the item to queue in its place."""
        assert self.direct is not None
        try:
            value = self.cls.publish(payload, self.info, **self.kwargs)
            if type(value) not in PLAIN_VALUES and inspect.isawaitable(value):
                return _Published(payload, value, sent_at)
            if value is SKIP:
                return None
            if self.share_base is None:
                done = self.direct(value, sent_at, None, None)
            else:
                done = self.direct(value, sent_at, (id(payload), id(value)), (payload, value))
        except Exception as exc:
            return _Failed(exc)  # raised by __anext__, as if it had run there
        return None if done is DELIVERED else done

    def __aiter__(self) -> SubscriptionStream:
        return self

    async def __anext__(self) -> Any:
        while True:
            while not self.queue:
                if self.ended or self.closed:
                    await self.aclose()
                    raise StopAsyncIteration
                self.waiter = asyncio.get_running_loop().create_future()
                try:
                    await self.waiter
                finally:
                    self.waiter = None
            assert self.queue is not None
            item = self.queue.popleft()
            if type(item) is tuple:
                payload, sent_at = item
                value = await _maybe_await(self.cls.publish(payload, self.info, **self.kwargs))
            elif type(item) is _Published:
                payload, sent_at = item.payload, item.sent_at
                value = await item.value
            elif type(item) is _Failed:
                raise item.error
            else:
                return item  # an ``Executed`` from the direct path: already published
            if value is SKIP:
                continue
            self.sent_at = sent_at
            if self.share_base is not None:
                # The broker hands one decoded payload object to every local subscriber of an
                # event; ``publish`` returning the same object (or a value derived identically)
                # is what lets their executions be shared.
                self.share_key = (id(payload), id(value))
                self.share_pins = (payload, value)
            return value

    async def _leave(self) -> None:
        for key in self.keys:
            try:
                await self.broker.leave(key, self._on_message)
            except Exception:
                log.exception("leaving group %s failed", key)
        self.keys = []

    async def aclose(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._wake()
        while self.queue:
            _discard(self.queue.popleft())
        self.queue = None
        await self._leave()
        if self.joined:
            self.recorder.subscriptions(-1)
        try:
            await _maybe_await(self.cls.unsubscribed(self.root, self.info, **self.kwargs))
        except Exception:
            log.exception("%s.unsubscribed raised", self.cls.__name__)
