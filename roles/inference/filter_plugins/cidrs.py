"""CIDR checks for security-group rules, on the standard library's ipaddress."""

from __future__ import annotations

import ipaddress


def _network(text):
    try:
        return ipaddress.ip_network(str(text), strict=True)
    except ValueError:
        return None


def invalid_cidrs(ranges):
    """The entries that are not network ranges in CIDR form (host bits set count as invalid)."""
    return [text for text in ranges if _network(text) is None or "/" not in str(text)]


def cidrs_of_version(ranges, version):
    """The ranges of one IP version (4 or 6)."""
    return [text for text in ranges if (_network(text) and _network(text).version == int(version))]


def overlapping_cidrs(ranges):
    """'inner inside outer' for each range that lies inside (or equals) another entry."""
    networks = [(text, _network(text)) for text in ranges]
    found = []
    for i, (inner_text, inner) in enumerate(networks):
        for j, (outer_text, outer) in enumerate(networks):
            if i != j and inner and outer and inner.version == outer.version and inner.subnet_of(outer):
                found.append(f"{inner_text} inside {outer_text}")
    return found


class FilterModule:
    def filters(self):
        return {
            "invalid_cidrs": invalid_cidrs,
            "cidrs_of_version": cidrs_of_version,
            "overlapping_cidrs": overlapping_cidrs,
        }
