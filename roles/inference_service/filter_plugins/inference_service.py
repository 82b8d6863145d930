"""Filters of the inference_service role: requests in flight, host status, capacity."""

import re

INSTANCE_SETTINGS = re.compile(r"[a-z0-9_]+-[0-9]+\.env\Z")  # /etc/inference/<engine>-<N>.env
READY_FLAG = re.compile(r"[0-9]+\Z")  # /run/inference-ready/<N>
SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{[^}]*\})?\s+(\S+)", re.MULTILINE)


def inference_in_flight(metrics_result, names):
    """Requests in flight from one uri result of an engine's /metrics: the sum of the gauges
    NAMES; 0 when the engine refuses the connection (it is not running, so nothing is in flight);
    None when it answers without those gauges; -1 when it does not answer (busy, or a timeout:
    ask again)."""
    if metrics_result.get("status") != 200:
        return 0 if "Connection refused" in str(metrics_result.get("msg", "")) else -1
    values = [float(v) for n, v in SAMPLE.findall(metrics_result.get("content", "")) if n in names]
    return int(sum(values)) if values else None


def _basename(path):
    return path.rsplit("/", 1)[-1]


def _uptime(seconds):
    seconds = int(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    if days:
        return f"{days}d{hours:02d}h{minutes:02d}m{seconds:02d}s"
    if hours:
        return f"{hours}h{minutes:02d}m{seconds:02d}s"
    return f"{minutes}m{seconds:02d}s"


def inference_status(units, flags, metrics, models, uptime, gpu_memory, names, instance_gpus, draining_flag="draining"):
    """One dict per engine instance, from the registered results of status.yml.

    units: systemd_service results, the engine instances first, then the readiness probe and the
    gateway; flags: find over the readiness directory; metrics and models: uri results per
    instance (/metrics, /v1/models); uptime: /proc/uptime text; gpu_memory: lines
    "index, memory.used" (or ""); names: the in-flight gauges; instance_gpus: each instance's GPU
    indices (the host manifest's); draining_flag: the file name of the draining flag.
    """
    flag_names = {_basename(f["path"]) for f in flags.get("files", [])}
    draining = draining_flag in flag_names
    now = float(uptime.split()[0])
    used = {}
    for line in gpu_memory.splitlines():
        if line.strip():
            index, mib = (part.strip() for part in line.split(","))
            used[int(index)] = int(mib)
    engines = units[: len(metrics)]
    readiness, gateway = (u.get("status", {}) for u in units[len(metrics) :])
    instances = []
    for index, (unit, metric, model, gpus) in enumerate(zip(engines, metrics, models, instance_gpus, strict=True)):
        status = unit.get("status", {})
        active = status.get("ActiveState", "unknown")
        entered = int(status.get("ActiveEnterTimestampMonotonic", "0") or 0) / 1e6
        listed = (model.get("json") or {}).get("data", []) if model.get("status") == 200 else []
        instances.append(
            {
                "instance": index,
                "unit": unit["__inference_service_unit"],
                "state": f"{active} ({status.get('SubState', 'unknown')})",
                "since": status.get("ActiveEnterTimestamp", "") if active == "active" else "",
                "uptime": _uptime(now - entered) if active == "active" and entered else "",
                "restarts": int(status.get("NRestarts", "0") or 0),
                "ready": str(index) in flag_names and not draining,
                "model": ", ".join(str(m.get("id")) for m in listed),
                "model_path": ", ".join(str(m.get("root", "")) for m in listed),
                "in_flight": inference_in_flight(metric, names) if active == "active" else 0,
                "gpu_memory_mib": sum(used[int(g)] for g in gpus if int(g) in used) if used else None,
            }
        )
    return {
        "draining": draining,
        "gateway": f"{gateway.get('ActiveState', 'unknown')} ({gateway.get('SubState', 'unknown')})",
        "readiness_probe": f"{readiness.get('ActiveState', 'unknown')} ({readiness.get('SubState', 'unknown')})",
        "instances": instances,
    }


def inference_status_lines(status):
    """The status as lines an operator reads."""
    lines = [
        f"engine {status.get('engine', '?')}, gateway {status['gateway']}, readiness probe {status['readiness_probe']}"
        + (", DRAINING (out of the load balancer)" if status["draining"] else "")
        + _settings(status)
    ]
    for i in status["instances"]:
        gpu = "n/a (no GPU)" if i["gpu_memory_mib"] is None else f"{i['gpu_memory_mib']} MiB"
        since = f" since {i['since']} (up {i['uptime']})" if i["since"] else ""
        lines.append(
            f"instance {i['instance']}: {i['unit']} {i['state']}{since}, restarts {i['restarts']}, "
            f"ready {'yes' if i['ready'] else 'no'}, model {i['model'] or '-'}"
            + (f" ({i['model_path']})" if i["model_path"] and i["model_path"] != i["model"] else "")
            + f", in flight {i['in_flight']}, "
            f"GPU memory {gpu}"
        )
    return lines


def _settings(status):
    """How what the host runs (its manifest) compares with the current settings."""
    if "differences" not in status:
        return ""
    if not status.get("manifest", True):
        return ", no manifest (never converged by this kit: run site.yml)"
    if status["differences"]:
        return f", runs other settings than configured ({', '.join(status['differences'])}: run playbooks/rolling.yml)"
    return ", runs the current settings"


def inference_capacity(survey, batch, draining_flag="draining"):
    """How much serving capacity would be out once BATCH (host names) goes out.

    survey: the results of a `find` looped over every host of the inference group (loop var
    __inference_service_peer) over the instance settings, the readiness flags and the draining
    flag. A host serves its instances whose readiness flag is set; none while draining. How many
    instances a host it cannot reach has is unknown: it is listed in "unreachable" and counts as
    none, so the caller refuses to judge the batch rather than guess.
    """
    hosts = {}
    for result in survey:
        files = [_basename(f["path"]) for f in result.get("files", [])]
        reachable = not result.get("unreachable") and not result.get("failed")
        instances = (sum(1 for f in files if INSTANCE_SETTINGS.match(f)) or 1) if reachable else 0
        ready = sum(1 for f in files if READY_FLAG.match(f))
        serving = 0 if not reachable or draining_flag in files else min(ready, instances)
        hosts[result["__inference_service_peer"]] = {"instances": instances, "serving": serving, "reachable": reachable}
    total = sum(h["instances"] for h in hosts.values())
    out_after = total - sum(h["serving"] for name, h in hosts.items() if name not in batch)
    return {
        "hosts": hosts,
        "total": total,
        "out_after": out_after,
        "out_after_percent": round(100 * out_after / total, 1) if total else 0.0,
        "not_serving": sorted(n for n, h in hosts.items() if h["serving"] < h["instances"] and n not in batch),
        "unreachable": sorted(n for n, h in hosts.items() if not h["reachable"]),
    }


class FilterModule:
    def filters(self):
        return {
            "inference_in_flight": inference_in_flight,
            "inference_status": inference_status,
            "inference_status_lines": inference_status_lines,
            "inference_capacity": inference_capacity,
        }
