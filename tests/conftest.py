"""Shared fixtures. Real servers are started by tests/servers/* on free loopback ports."""

pytest_plugins = [
    "tests.servers.rabbitmq",
    "tests.servers.nginx",
    "tests.servers.sshd",
    "tests.servers.ftpd",
    "tests.servers.mosquitto",
    "tests.servers.redis",
]
