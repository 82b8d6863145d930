#!/usr/bin/python
# Copyright (c) the inference-kit authors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
---
module: inference_peer_ready
short_description: Wait until a serving host's /ready has not changed for a number of seconds
description:
  - Run on a peer of a batch that is about to leave a load balancer that checks /ready itself.
    A load balancer counts a host back in only after its rise (its interval times its healthy
    threshold; HAProxy's C(inter 1s rise 2) is 2 s): a batch drained before then finds no peer
    in, and the load balancer answers 503.
  - The gateway's /ready answers 200 while an instance's readiness flag exists in O(ready_dir)
    and the draining flag O(draining_flag) does not. Creating or removing either changes its
    directory's modification time (the readiness probe rewrites a flag in place while the
    instance stays ready, which does not), so the newest of the two is when /ready last changed.
  - A peer that serves (a readiness flag, no draining flag) is waited for until that change is
    O(seconds) old; a peer that does not serve is not waited for (the capacity guard counts it
    out already). Fails after O(timeout) seconds.
options:
  ready_dir:
    description: The directory of the instances' readiness flags.
    type: path
    required: true
  draining_flag:
    description: The draining flag.
    type: path
    required: true
  seconds:
    description: Seconds /ready must have been unchanged.
    type: int
    required: true
  timeout:
    description: Seconds to wait in all.
    type: int
    required: true
"""

RETURN = r"""
serving:
  description: Whether the host serves (a readiness flag, no draining flag).
  type: bool
  returned: always
ready_for:
  description: Seconds since /ready last changed, when it serves.
  type: float
  returned: always
"""

import os
import time

from ansible.module_utils.basic import AnsibleModule


def mtime(path):
    try:
        return os.stat(path).st_mtime
    except FileNotFoundError:
        return 0.0


def main():
    module = AnsibleModule(
        argument_spec={
            "ready_dir": {"type": "path", "required": True},
            "draining_flag": {"type": "path", "required": True},
            "seconds": {"type": "int", "required": True},
            "timeout": {"type": "int", "required": True},
        },
        supports_check_mode=True,
    )
    p = module.params
    deadline = time.monotonic() + p["timeout"]
    while True:
        flags = os.listdir(p["ready_dir"]) if os.path.isdir(p["ready_dir"]) else []
        serving = bool([f for f in flags if f.isdigit()]) and not os.path.exists(p["draining_flag"])
        changed = max(mtime(p["ready_dir"]), mtime(os.path.dirname(p["draining_flag"])))
        ready_for = max(0.0, time.time() - changed)
        if not serving or ready_for >= p["seconds"] or module.check_mode:
            module.exit_json(changed=False, serving=serving, ready_for=round(ready_for, 1))
        if time.monotonic() >= deadline:
            module.fail_json(
                msg=f"/ready of this host keeps changing: ready for {ready_for:.0f} s, not {p['seconds']} s, "
                f"after waiting {p['timeout']} s. Its readiness probe may be failing now and then "
                "(journalctl -u inference-readiness).",
                serving=serving,
                ready_for=round(ready_for, 1),
            )
        time.sleep(min(2.0, p["seconds"] - ready_for + 0.1))


if __name__ == "__main__":
    main()
