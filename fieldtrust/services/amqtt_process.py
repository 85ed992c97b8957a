"""The amqtt broker process: ``python -m fieldtrust.services.amqtt_process --port N --log FILE``.

Started by :class:`fieldtrust.services.amqtt_broker.AmqttBroker` (through
``fieldtrust.processes.spawn``, so it ends with its parent), never imported by the agent.  It
serves MQTT 3.1.1 on 127.0.0.1 only, prints ``ready`` once it listens, and ends cleanly on
SIGTERM or SIGINT.

Sessions live in memory: a client that connects with ``clean_session=False`` finds its
subscriptions and the QoS 1 messages queued for it after a reconnect, as long as this process
lives.  (amqtt's own session store, ``amqtt.contrib.persistence``, needs its ``contrib`` extra
— SQLAlchemy, aiosqlite and a python-ldap build — too much for a broker that exists for demos.)
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from pathlib import Path

from amqtt.broker import Broker
from amqtt.plugins.base import BaseAuthPlugin
from amqtt.session import Session

from fieldtrust.services.amqtt_broker import READY

#: a session nobody reconnects to is forgotten after a week, like mosquitto's persistent_client_expiration 7d
SESSION_EXPIRY_S = 7 * 86_400


class LoopbackAuthPlugin(BaseAuthPlugin):
    """Admits every client of the loopback listener *without* marking it anonymous.

    amqtt's ``AnonymousAuthPlugin`` flags each session anonymous, and amqtt keeps no queued
    messages for anonymous sessions: the agent's persistent session would lose the node frames
    and receipts sent while it restarts.  Only processes on this machine can reach the listener.
    """

    async def authenticate(self, *, session: Session) -> bool:
        return True


class ScopedRetainBroker(Broker):
    """amqtt's Broker, sending a client only the retained messages of topic filters it holds.

    amqtt 0.12 offers a connecting client the retained messages of *every* filter any session
    in the broker subscribed to (``_handle_client_session`` loops over all subscriptions, not the
    client's): a sensor node would receive each gateway's retained birth and will.  The check
    on the holder of the filter restores MQTT's rule; ``tests/test_local_broker.py`` keeps it honest.
    """

    async def _publish_retained_messages_for_subscription(self, subscription: tuple[str, int],
                                                          session: Session) -> None:
        holders = self._subscriptions.get(subscription[0], [])
        if any(held.client_id == session.client_id for held, _qos in holders):
            await super()._publish_retained_messages_for_subscription(subscription, session)


def broker_config(port: int) -> dict[str, object]:
    """amqtt's configuration: one TCP listener on 127.0.0.1:``port``, no $SYS topics, no packet logging."""
    return {
        "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}"}},
        "session_expiry_interval": SESSION_EXPIRY_S,
        # by its import path: run with ``-m``, this module is ``__main__``, and amqtt imports the plugin anew
        "plugins": {"fieldtrust.services.amqtt_process.LoopbackAuthPlugin": {}},
    }


async def serve(port: int) -> None:
    """Run the broker until SIGTERM or SIGINT, then shut it down (clients see their connection close)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    broker = ScopedRetainBroker(broker_config(port))
    await broker.start()  # raises when the port is taken: the process exits non-zero, its parent reports it
    logging.getLogger(__name__).info("amqtt listening on 127.0.0.1:%d", port)
    print(READY, flush=True)
    await stop.wait()
    await broker.shutdown()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--log", type=Path, required=True)
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    args = parser.parse_args(argv)
    logging.basicConfig(filename=args.log, level=args.log_level,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("transitions").setLevel(logging.WARNING)  # amqtt's state machines: a line per state change
    asyncio.run(serve(args.port))


if __name__ == "__main__":
    main()
