"""What the Prometheus server scrapes: the inventory's hosts from their manifests, or the EC2
fleet's instances by their GPU tag."""

from __future__ import annotations

import pytest
from kitcode import load

targets = load("roles/prometheus_server/filter_plugins/prometheus_server.py")
layout = load("roles/inference/filter_plugins/inference_layout.py")

PORTS = {"node": 9100, "gateway": 3903, "nginx": 9113, "gpu": 9400}


def test_one_target_group_per_path_of_each_host():
    instances = layout.inference_instances([0, 1], "vllm", 8100, [0, 1], 1)
    manifest = layout.inference_metrics_targets(instances, True, PORTS)
    groups = targets.prometheus_file_sd([{"name": "gpu-1", "address": "10.0.1.5", "targets": manifest}], 9500)
    assert [group["targets"] for group in groups] == [["10.0.1.5:9500"]] * 6
    assert groups[0]["labels"] == {"__metrics_path__": "/metrics/node", "host": "gpu-1", "exporter": "node"}
    assert groups[-1]["labels"] == {
        "__metrics_path__": "/metrics/engine/1",
        "host": "gpu-1",
        "exporter": "engine",
        "engine_instance": "1",
        "gpu": "1",
    }


@pytest.mark.parametrize(
    ("gpus_per_instance", "engines"),
    [
        # one instance per GPU: instance 0 on every size, 1-3 on the 4- and 8-GPU sizes, 4-7 on the 8-GPU one
        (1, [("0", "0", ""), ("1", "1", "4|8"), ("3", "3", "4|8"), ("4", "4", "8"), ("7", "7", "8")]),
        # tensor parallel over 4 GPUs: no instance on a 1-GPU size
        (4, [("0", "0,1,2,3", "4|8"), ("1", "4,5,6,7", "8")]),
        (8, [("0", "0,1,2,3,4,5,6,7", "8")]),
    ],
)
def test_ec2_jobs_scrape_each_engine_instance_only_where_it_runs(gpus_per_instance, engines):
    jobs = {job["name"]: job for job in targets.prometheus_ec2_jobs(gpus_per_instance)}
    for instance, gpus, keep in engines:
        job = jobs[f"engine-{instance}"]
        assert (job["path"], job["labels"]["gpu"], job["keep_gpus"]) == (f"/metrics/engine/{instance}", gpus, keep)
    assert len([name for name in jobs if name.startswith("engine-")]) == 8 // gpus_per_instance
    assert jobs["node"] == {"name": "node", "path": "/metrics/node", "keep_gpus": "", "labels": {"exporter": "node"}}


def test_ec2_jobs_leave_out_the_gpu_exporter_when_hosts_run_their_own():
    assert "gpu" not in [job["name"] for job in targets.prometheus_ec2_jobs(1, gpu_exporter=False)]


def test_a_host_keeps_the_port_its_manifest_names():
    hosts = [{"name": "a", "address": "10.0.1.5", "port": 9600, "targets": [{"path": "/metrics/node", "labels": {}}]}]
    assert targets.prometheus_file_sd(hosts, 9500)[0]["targets"] == ["10.0.1.5:9600"]
