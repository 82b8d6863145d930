"""The CIDR checks behind aws_network's preflight."""

from __future__ import annotations

import pytest
from kitcode import load

cidrs = load("roles/inference/filter_plugins/cidrs.py")


@pytest.mark.parametrize(
    ("ranges", "invalid"),
    [
        (["10.0.0.0/8", "2001:db8::/32", "0.0.0.0/0"], []),
        (["10.0.0.1/8"], ["10.0.0.1/8"]),  # host bits set: a typo for 10.0.0.0/8 or 10.0.0.1/32
        (["10.0.0.1"], ["10.0.0.1"]),  # an address is not a range
        (["10.0.0.0/33", "example.com", ""], ["10.0.0.0/33", "example.com", ""]),
    ],
)
def test_invalid_cidrs(ranges, invalid):
    assert cidrs.invalid_cidrs(ranges) == invalid


def test_ranges_by_ip_version():
    ranges = ["10.0.0.0/8", "2001:db8::/32", "bad"]
    assert (cidrs.cidrs_of_version(ranges, 4), cidrs.cidrs_of_version(ranges, "6")) == (
        ["10.0.0.0/8"],
        ["2001:db8::/32"],
    )


@pytest.mark.parametrize(
    ("ranges", "overlaps"),
    [
        (["10.0.0.0/8", "10.1.0.0/16"], ["10.1.0.0/16 inside 10.0.0.0/8"]),
        (["10.0.0.0/16", "10.1.0.0/16", "2001:db8::/32"], []),
        (["10.0.0.0/8", "10.0.0.0/8"], ["10.0.0.0/8 inside 10.0.0.0/8", "10.0.0.0/8 inside 10.0.0.0/8"]),
    ],
)
def test_overlapping_cidrs(ranges, overlaps):
    assert cidrs.overlapping_cidrs(ranges) == overlaps
