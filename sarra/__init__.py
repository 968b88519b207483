"""sarra: an AMQP file-pump toolkit speaking the Sarracenia v02 protocol."""

__version__ = "0.1.0"
