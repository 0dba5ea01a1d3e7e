"""Dramatiq set-up: Redis or RabbitMQ in scale-out, an in-process stub queue when embedded.

Actors are declared once (``safekeep.workers.actors``) and bound to whichever broker
``configure`` builds, so tests and the CLI can point the same actors at another broker.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import dramatiq
import structlog
from dramatiq.asyncio import get_event_loop_thread
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import Middleware
from dramatiq.middleware.asyncio import AsyncIO

from safekeep.backup.context import close_loop_resources
from safekeep.settings import Settings
from safekeep.tenants.outbox import Message
from safekeep.transient import sync_redis
from safekeep.workers.context import close_runtimes

_ACTORS: dict[str, dramatiq.Actor] = {}

REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
AMQP_SCHEMES = ("amqp://", "amqps://")
log = structlog.get_logger(__name__)
# How long a worker shutting down waits for its pools and clients to close.
CLOSE_TIMEOUT_SECONDS = 10.0
# /readyz must answer within its own 5 s budget even when the broker host swallows packets.
PING_TIMEOUT_SECONDS = 3.0


class UnsupportedBroker(ValueError):
    pass


def register(actor: dramatiq.Actor) -> None:
    _ACTORS[actor.actor_name] = actor


class CloseRuntimes(Middleware):
    """On worker shutdown, close what the actors opened on the event-loop thread (database
    pools, HTTP clients, the Redis limiter) instead of leaving it to the garbage collector."""

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        async def close() -> None:
            try:
                async with asyncio.timeout(CLOSE_TIMEOUT_SECONDS):
                    await close_loop_resources()
                    await close_runtimes()
            except TimeoutError:
                # A shutdown must end: name what was still waiting, and let the process go.
                pending = [
                    f"{task.get_name()}: {task.get_coro()!r}"
                    for task in asyncio.all_tasks()
                    if task is not asyncio.current_task()
                ]
                log.warning("worker_cleanup_timed_out", pending=pending[:20])

        loop_thread = get_event_loop_thread()
        if loop_thread is not None:
            try:
                loop_thread.run_coroutine(close())
            except Exception:  # shutting down: log and carry on
                log.warning("worker_cleanup_failed", exc_info=True)


def build_broker(settings: Settings) -> dramatiq.Broker:
    url = settings.broker_url
    broker: dramatiq.Broker
    if not url:
        broker = StubBroker()
    elif url.startswith(REDIS_SCHEMES):
        # A client that retries through a restart and checks idle connections: without it a
        # retry's enqueue during a Redis blip is dropped, and pooled connections the server
        # closed fail the next command. Dramatiq's consumer reconnects on its own.
        from dramatiq.brokers.redis import RedisBroker  # loaded only where configured

        broker = RedisBroker(client=sync_redis(url), namespace="safekeep")
    elif url.startswith(AMQP_SCHEMES):
        # Publisher confirms: a message sent after a commit is on the broker when send returns,
        # as an LPUSH is on Redis; without them a connection lost just after the publish would
        # drop it silently. Queues carry no prefix: give Safekeep a vhost of its own.
        from dramatiq.brokers.rabbitmq import RabbitmqBroker

        broker = RabbitmqBroker(url=url, confirm_delivery=True)
    else:
        raise UnsupportedBroker(
            f"SAFEKEEP_BROKER_URL scheme not supported: {url.split(':', 1)[0]!r} "
            "(use redis://, amqp:// or leave it unset for the embedded queue)"
        )
    broker.add_middleware(AsyncIO())
    broker.add_middleware(CloseRuntimes())
    return broker


_current: tuple[str, dramatiq.Broker] | None = None


def configure(settings: Settings) -> dramatiq.Broker:
    """Make the broker for these settings current and bind every actor to it.

    Idempotent for the same queue URL: the API's lifespan, the scheduler and the worker of one
    process all call this, and with the embedded (in-process) queue a second broker would be a
    second queue that no worker reads."""
    global _current
    if _current is not None and _current[0] == settings.broker_url:
        return _current[1]
    broker = build_broker(settings)
    # Current before the actors are first declared: otherwise Dramatiq would make up a default
    # broker for them (a RabbitMQ one on 127.0.0.1:5672, now that pika is installed).
    dramatiq.set_broker(broker)
    import safekeep.workers.actors  # noqa: F401  (declares and registers the actors)

    for actor in _ACTORS.values():
        actor.broker = broker
        broker.declare_actor(actor)
    _current = (settings.broker_url, broker)
    return broker


def send_messages(messages: Sequence[Message]) -> None:
    """Send what a unit of work collected, after its commit."""
    for message in messages:
        actor = _ACTORS.get(message.actor)
        if actor is None:
            raise LookupError(f"no actor named {message.actor!r}")
        actor.send_with_options(args=message.args, delay=message.delay_ms)


def actor_names() -> list[str]:
    return sorted(_ACTORS)


def ping(settings: Settings) -> None:
    """Raise if the configured queue is unreachable (for /readyz). The embedded queue lives
    in this process and is always reachable."""
    url = settings.broker_url
    if not url:
        return
    if url.startswith(AMQP_SCHEMES):
        _ping_rabbitmq(url)
        return
    import redis

    client = redis.Redis.from_url(
        url, socket_connect_timeout=PING_TIMEOUT_SECONDS, socket_timeout=PING_TIMEOUT_SECONDS
    )
    try:
        client.ping()
    finally:
        client.close()


def _ping_rabbitmq(url: str) -> None:
    """Open and close a real AMQP connection: the handshake checks the credentials and that
    the vhost exists, which a TCP connect alone would not. Several ``;``-separated URLs are
    tried in turn, as the broker itself does."""
    import pika
    import pika.exceptions

    candidates = [pika.URLParameters(part) for part in url.split(";")]
    for parameters in candidates:
        parameters.connection_attempts = 1
        parameters.socket_timeout = PING_TIMEOUT_SECONDS
        parameters.stack_timeout = PING_TIMEOUT_SECONDS
    try:
        connection = pika.BlockingConnection(candidates)
    except pika.exceptions.AMQPConnectionError as exc:
        # pika's exceptions print as nothing; their repr names the cause (refused, vhost, ...).
        raise ConnectionError(f"RabbitMQ unreachable: {exc!r}") from exc
    connection.close()
