"""sarra.broker: one AMQP session per flow thread (declare, consume, ack, publish).

See :mod:`sarra.broker.base` for the data types and :mod:`sarra.broker.session` for the
connection model (generations, confirms, error translation).
"""

from sarra.broker.base import Broker, BrokerUrl, Delivery, QueueSpec
from sarra.broker.session import BrokerSession, backoff_delays

__all__ = ["Broker", "BrokerSession", "BrokerUrl", "Delivery", "QueueSpec", "backoff_delays"]
