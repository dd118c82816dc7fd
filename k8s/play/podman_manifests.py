"""Turns the rendered chart into what `podman kube play` (4.3) runs: the migrate Jobs become Pods of the same spec (podman plays Pods and
Deployments, not Jobs), the Deployments are kept with the ConfigMap they read (on the
host's network without their port list, which podman refuses there). Objects that only a cluster acts
on (Services, autoscalers, disruption budgets, network policies, the gateway) are left
out, and named on stderr.

Usage: podman_manifests.py RENDERED OUT_DIR
  writes OUT_DIR/migrate.yaml, OUT_DIR/services.yaml and OUT_DIR/migrate-pods.txt (the
  names of the migrate pods, one per line).
"""

import sys
from collections import Counter
from pathlib import Path

import yaml


def host_network_ports(container: dict) -> None:
    """On the host's network a container's ports are the host's: Kubernetes lists them as
    host ports, podman refuses them as port mappings. They are dropped, and the probes
    that named one get its number."""
    numbers = {p["name"]: p["containerPort"] for p in container.pop("ports", []) if "name" in p}
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        http = container.get(probe, {}).get("httpGet")
        if http and http["port"] in numbers:
            http["port"] = numbers[http["port"]]


def main(rendered: str, out_dir: str) -> None:
    objects = [o for o in yaml.safe_load_all(Path(rendered).read_text()) if o]
    migrate, services, left_out = [], [], Counter()
    for obj in objects:
        kind = obj["kind"]
        if kind == "Job":
            pod_spec = dict(obj["spec"]["template"]["spec"], restartPolicy="Never")
            # The revision suffix keeps a cluster's hook Jobs apart; one run needs none.
            name = obj["metadata"]["name"].rsplit("-", 1)[0]
            labels = obj["spec"]["template"]["metadata"]["labels"]
            migrate.append(
                {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels}, "spec": pod_spec}
            )
        elif kind == "Deployment":
            pod_spec = obj["spec"]["template"]["spec"]
            if pod_spec.get("hostNetwork"):
                for container in pod_spec["containers"]:
                    host_network_ports(container)
            services.append(obj)
        elif kind == "ConfigMap":
            services.append(obj)
        else:
            left_out[kind] += 1
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "migrate.yaml").write_text(yaml.safe_dump_all(migrate, sort_keys=False))
    (out / "services.yaml").write_text(yaml.safe_dump_all(services, sort_keys=False))
    (out / "migrate-pods.txt").write_text("".join(p["metadata"]["name"] + "\n" for p in migrate))
    deployments = sum(o["kind"] == "Deployment" for o in services)
    kept = f"{len(migrate)} migrate jobs as pods, {deployments} deployments"
    dropped = ", ".join(f"{n} {k}" for k, n in sorted(left_out.items()))
    print(f"[k8s-play] {kept}; left to a cluster: {dropped}", file=sys.stderr)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(*sys.argv[1:])
