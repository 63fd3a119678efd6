"""Host names and addresses: is this one on this machine's loopback?"""

from __future__ import annotations

import ipaddress
from typing import Optional


def is_loopback_host(host: Optional[str]) -> bool:
    """`localhost`, 127.0.0.0/8 or ::1 (brackets allowed): a service on this machine only."""
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
