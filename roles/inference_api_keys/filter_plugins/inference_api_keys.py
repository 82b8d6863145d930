"""Plan a client-key rotation (filter for plan.yml)."""

import secrets


def _newest(entries):
    """The key added last: by its "added" stamp (phase add writes one), else the last in the file."""
    return max(enumerate(entries), key=lambda item: (str(item[1].get("added", "")), item[0]))[1]


def inference_api_keys_plan(current, client, phase, new_key="", added_at=""):
    """The key list after PHASE for CLIENT (a name, or "all") and what to check on every host.

    Returns entries (the list to write and serve), checks ({name, key, status}: every key and
    the status /v1/models must answer with it, 200 or 401), added and retiring (client names) and new_keys
    (name -> key generated or given), and error: what makes the plan impossible ("" if nothing;
    never a key). Phase add stamps the new key with ADDED_AT; retire keeps each client's newest
    key, whatever the order in the file. Both phases may run again: add on a client that already
    has its new key, or retire on one with a single key, changes nothing.
    """
    names = list(dict.fromkeys(entry["name"] for entry in current))
    clients = names if client == "all" else [client]
    unknown = [name for name in clients if name not in names]
    if unknown or not clients:
        return _impossible(
            f"No client named {', '.join(unknown) or '(none)'} in vault_inference_gateway_api_keys; "
            f"clients: {', '.join(names) or 'none'}. Use -e client=<name> or -e client=all."
        )
    if new_key and len(clients) != 1:
        return _impossible("-e new_key=... goes with one client only (-e client=<name>).")
    pending = {
        name: _newest(entries)["key"]
        for name in names
        if len(entries := [entry for entry in current if entry["name"] == name]) > 1
    }
    # Without case, as the gateway's preflight compares its keys: keys that differ only in case count as one.
    # The client's own pending key is no conflict: phase add ran before with it.
    others = [e["key"] for e in current if not (e["name"] in clients and e["key"] == pending.get(e["name"]))]
    if new_key and str(new_key).lower() in {str(key).lower() for key in others}:
        return _impossible(
            "The new key is already in use (keys that differ only in case count as one); give a key no client has."
        )
    keys, retired, added, retiring, new_keys = [], [], [], [], {}
    for name in names:
        entries = [entry for entry in current if entry["name"] == name]
        if name in clients and phase == "add" and len(entries) == 1:
            new_keys[name] = new_key or secrets.token_urlsafe(32)
            entries = [*entries, {"name": name, "key": new_keys[name], **({"added": added_at} if added_at else {})}]
            added.append(name)
        elif name in clients and phase == "add" and new_key and new_key != pending[name]:
            return _impossible(
                f"{name} already has a second key waiting (phase add ran before); retire the old key first "
                "(-e phase=retire), then add another."
            )
        elif name in clients and phase == "retire" and len(entries) > 1:
            newest = _newest(entries)
            retired += [(name, entry["key"]) for entry in entries if entry is not newest]
            entries = [newest]
            retiring.append(name)
        keys += entries
    return {
        "entries": keys,
        "checks": [{"name": e["name"], "key": e["key"], "status": 200} for e in keys]
        + [{"name": name, "key": key, "status": 401} for name, key in retired],
        "added": added,
        "retiring": retiring,
        "new_keys": new_keys,
        "error": "",
    }


def _impossible(error):
    return {"entries": [], "checks": [], "added": [], "retiring": [], "new_keys": {}, "error": error}


def inference_api_keys_mismatches(results):
    """What answered otherwise than planned, from the uri results of apply.yml (no key in the text)."""
    wrong = []
    for result in results:
        port, check = result["__inference_api_keys_try"]
        status = result.get("status", -1)
        if status != check["status"]:
            kind = "a key it must accept" if check["status"] == 200 else "a retired key"
            wrong.append(
                f"gateway port {port} answered {status} to {kind} of {check['name']} (expected {check['status']})"
            )
    return wrong


class FilterModule:
    def filters(self):
        return {
            "inference_api_keys_plan": inference_api_keys_plan,
            "inference_api_keys_mismatches": inference_api_keys_mismatches,
        }
