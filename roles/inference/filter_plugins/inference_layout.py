"""The contract's rules: how the kit names and lays out an engine's units and settings files on
a host, and the host manifest (ansible_local.inference) that says what a host runs."""

import hashlib
import json
import re

INSTANCE_SETTINGS = re.compile(r"([a-z0-9_]+)-([0-9]+)\.env\Z")  # <config dir>/<engine>-<N>.env


def inference_engine_unit(engine, instance=None):
    """The systemd unit of ENGINE's INSTANCE (inference-vllm@0.service), or with no instance
    the template unit they are made from (inference-vllm@.service)."""
    return f"inference-{engine}@{'' if instance is None else instance}.service"


def inference_engine_units(engine, instances):
    """The units of ENGINE's INSTANCES, in their order."""
    return [inference_engine_unit(engine, instance) for instance in instances]


def inference_instances(instance_ids, engine, first_port, gpu_indices, gpus_per_instance):
    """ENGINE's instances on a host, one dict each: id, unit, loopback port (consecutive from
    FIRST_PORT) and GPUs (consecutive slices of GPUS_PER_INSTANCE of the host's GPU_INDICES;
    none on a host without GPUs)."""
    size = int(gpus_per_instance)
    gpu_indices = [int(index) for index in gpu_indices]
    return [
        {
            "id": int(instance),
            "unit": inference_engine_unit(engine, int(instance)),
            "port": int(first_port) + position,
            "gpus": gpu_indices[int(instance) * size : (int(instance) + 1) * size],
        }
        for position, instance in enumerate(instance_ids)
    ]


def inference_instance_settings(engine, instance):
    """The file name of an instance's settings in the config directory (vllm-0.env)."""
    return f"{engine}-{instance}.env"


def inference_unit_of_settings(name):
    """The unit an instance settings file (a file name or path) belongs to, else None."""
    match = INSTANCE_SETTINGS.match(str(name).rsplit("/", 1)[-1])
    return inference_engine_unit(match.group(1), int(match.group(2))) if match else None


def inference_metrics_targets(instances, gpu_exporter, exporter_ports):
    """What the metrics listener serves: one path per exporter and per engine instance (INSTANCES
    as inference_instances gives them), each with the loopback port it proxies to and the labels
    Prometheus puts on its series: "exporter", and for an instance "engine_instance" and "gpu"
    (its GPUs' indices, comma separated; dcgm-exporter's gpu label when an instance has one GPU).
    EXPORTER_PORTS maps node, gateway, nginx and gpu to their loopback ports; the GPU exporter is
    served only when GPU_EXPORTER is true (a GPU host whose exporter the kit installs)."""
    exporters = ["node", "gateway", "nginx"] + (["gpu"] if gpu_exporter else [])
    targets = [
        {"path": f"/metrics/{name}", "port": int(exporter_ports[name]), "labels": {"exporter": name}}
        for name in exporters
    ]
    return targets + [
        {
            "path": f"/metrics/engine/{instance['id']}",
            "port": int(instance["port"]),
            "labels": {
                "exporter": "engine",
                "engine_instance": str(instance["id"]),
                "gpu": ",".join(str(gpu) for gpu in instance["gpus"]),
            },
        }
        for instance in instances
    ]


MANIFEST_PARTS = ("engine", "model", "gateway", "metrics")


def inference_manifest(engine, model, gateway, metrics):
    """The host manifest from the parts the engine, model, gateway and metrics roles record (none
    holds a secret), with one digest of them all: equal digests, same deployment."""
    parts = {"engine": engine, "model": model, "gateway": gateway, "metrics": metrics}
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()
    return {"schema": 1, **parts, "settings_digest": digest}


def inference_manifest_differences(running, configured):
    """The parts (engine, model, gateway, metrics) in which the manifest a host runs differs from the one
    the current settings give; every part when the host has no manifest."""
    running = running or {}
    return [part for part in MANIFEST_PARTS if running.get(part) != configured.get(part)]


class FilterModule:
    def filters(self):
        return {
            "inference_engine_unit": inference_engine_unit,
            "inference_manifest": inference_manifest,
            "inference_metrics_targets": inference_metrics_targets,
            "inference_manifest_differences": inference_manifest_differences,
            "inference_engine_units": inference_engine_units,
            "inference_instances": inference_instances,
            "inference_instance_settings": inference_instance_settings,
            "inference_unit_of_settings": inference_unit_of_settings,
        }
