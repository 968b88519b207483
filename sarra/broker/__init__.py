"""sarra.broker: one AMQP session per flow thread (declare, consume, ack, publish).

See :mod:`sarra.broker.base` for the data types and :mod:`sarra.broker.session` for the
connection model (generations, confirms, error translation).
"""

from sarra.broker.base import BrokerUrl, Delivery, QueueSpec
from sarra.broker.session import BrokerSession, backoff_delays

__all__ = ["BrokerSession", "BrokerUrl", "Delivery", "QueueSpec", "backoff_delays"]
