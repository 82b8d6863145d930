"""Parse `nvidia-smi --query-gpu=... --format=csv,noheader,nounits` output."""

QUERY_FIELDS = ("index", "name", "memory.total", "driver_version", "compute_cap")


def nvidia_smi_gpus(stdout):
    """Return one dict per GPU: index, name, memory_mib, driver, driver_major, compute_cap."""
    gpus = []
    for line in stdout.splitlines():
        if not line.strip():
            continue
        index, name, memory, driver, compute_cap = (part.strip() for part in line.split(","))
        gpus.append(
            {
                "index": int(index),
                "name": name,
                "memory_mib": int(memory),
                "driver": driver,
                "driver_major": int(driver.split(".")[0]),
                "compute_cap": compute_cap,
            }
        )
    return gpus


class FilterModule:
    def filters(self):
        return {"nvidia_smi_gpus": nvidia_smi_gpus}
