"""Loopback ports for the servers the test fixtures start."""

import socket


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def is_loopback(ip: str) -> bool:
    """127.0.0.0/8, ::1, and IPv4 loopback seen through a dual-stack socket (::ffff:127.0.0.1)."""
    import ipaddress

    address = ipaddress.ip_address(ip)
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


def listening_ips(process) -> list:
    """The IPs `process` (a psutil.Process) listens on over TCP/UDP."""
    import psutil

    # net_connections() is psutil 6's name; ZenML 0.90's server extra pins psutil < 6.
    sockets = process.net_connections("inet") if hasattr(process, "net_connections") else process.connections("inet")
    return [c.laddr.ip for c in sockets if c.status == psutil.CONN_LISTEN]
