"""What Prometheus scrapes of the fleet: file_sd target groups from the hosts' manifests
(inventory discovery), or one EC2-discovered job per metrics path (EC2 discovery)."""

G6E_GPU_COUNTS = (1, 4, 8)  # g6e.xlarge-16xlarge, g6e.12xlarge and 24xlarge, g6e.48xlarge


def prometheus_file_sd(hosts, port):
    """One file_sd target group per metrics path of each host in HOSTS ({name, address, targets,
    and its listener's port unless that is PORT}: targets as the host manifest's metrics.targets
    lists them), labelled with the path's labels and host (the inventory name)."""
    return [
        {
            "targets": [f"{host['address']}:{int(host.get('port', port))}"],
            "labels": {"__metrics_path__": target["path"], "host": host["name"], **target["labels"]},
        }
        for host in hosts
        for target in host["targets"]
    ]


def _alternatives(values):
    return "|".join(str(value) for value in values)


def prometheus_ec2_jobs(gpus_per_instance, gpu_exporter=True, gpu_counts=G6E_GPU_COUNTS):
    """The EC2-discovered jobs: node, gateway, nginx, gpu (GPU_EXPORTER), and engine instance N
    for every N an instance of some size in GPU_COUNTS runs (GPUS_PER_INSTANCE GPUs each). Each
    job keeps only instances whose inference-kit:gpus tag gives them that instance ("keep_gpus",
    a regex over the tag; "" keeps all), and labels its series as the metrics listener does."""
    size = int(gpus_per_instance)
    exporters = ["node", "gateway", "nginx"] + (["gpu"] if gpu_exporter else [])
    jobs = [
        {"name": name, "path": f"/metrics/{name}", "keep_gpus": "", "labels": {"exporter": name}} for name in exporters
    ]
    for instance in range(max(gpu_counts) // size):
        hosts_with_it = [count for count in gpu_counts if count >= (instance + 1) * size]
        gpus = range(instance * size, (instance + 1) * size)
        jobs.append(
            {
                "name": f"engine-{instance}",
                "path": f"/metrics/engine/{instance}",
                "keep_gpus": "" if hosts_with_it == list(gpu_counts) else _alternatives(hosts_with_it),
                "labels": {
                    "exporter": "engine",
                    "engine_instance": str(instance),
                    "gpu": ",".join(str(gpu) for gpu in gpus),
                },
            }
        )
    return jobs


class FilterModule:
    def filters(self):
        return {"prometheus_file_sd": prometheus_file_sd, "prometheus_ec2_jobs": prometheus_ec2_jobs}
