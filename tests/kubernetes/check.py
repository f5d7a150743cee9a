"""Offline checks of deploy/kubernetes (see check.sh): render, validate, cross-check, and run
`holdfast check` on the rendered config. Prints one line per check; exits 1 on any failure."""

import copy
import os
import subprocess
import sys
import tempfile
import tomllib

import kubernetes_validate
import yaml

# The oldest Kubernetes still supported by the large providers, and the newest schemas shipped.
VERSIONS = ["1.30.0", "1.37.0"]
DIR = "deploy/kubernetes"

failures = []


def check(ok, what):
    print(("ok    " if ok else "FAIL  ") + what)
    if not ok:
        failures.append(what)


def duration_s(text):
    """A holdfast duration ("10s", "1m 30s", "500ms") in seconds."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    total, number = 0.0, ""
    i = 0
    while i < len(text):
        if text[i].isdigit():
            number += text[i]
            i += 1
            continue
        unit = "ms" if text.startswith("ms", i) else text[i]
        if unit.strip():
            total += int(number) * units[unit]
            number = ""
        i += len(unit)
    return total


def render():
    """What `kubectl apply -k deploy/kubernetes` applies (the parts of kustomize it uses)."""
    with open(os.path.join(DIR, "kustomization.yaml")) as f:
        kustomization = yaml.safe_load(f)
    objects = []
    for resource in kustomization["resources"]:
        with open(os.path.join(DIR, resource)) as f:
            objects += [o for o in yaml.safe_load_all(f) if o]
    for generator in kustomization.get("configMapGenerator", []):
        data = {}
        for file in generator["files"]:
            key, _, path = file.partition("=")
            path = path or key
            with open(os.path.join(DIR, path)) as f:
                data[os.path.basename(key)] = f.read()
        objects.append(
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": generator["name"]}, "data": data}
        )
    namespace = kustomization.get("namespace")
    labels = {}
    for entry in kustomization.get("labels", []):
        labels.update(entry["pairs"])
    images = {i["name"]: i for i in kustomization.get("images", [])}
    for o in objects:
        meta = o.setdefault("metadata", {})
        if namespace and o["kind"] != "Namespace":
            meta["namespace"] = namespace
        meta.setdefault("labels", {}).update(labels)
        spec = o.get("spec", {})
        if o["kind"] in ("Deployment",):
            spec["selector"]["matchLabels"].update(labels)
            spec["template"]["metadata"]["labels"].update(labels)
            for c in spec["template"]["spec"]["containers"]:
                image = images.get(c["image"])
                if image:
                    c["image"] = f'{image["newName"]}:{image["newTag"]}'
            for t in spec["template"]["spec"].get("topologySpreadConstraints", []):
                t["labelSelector"]["matchLabels"].update(labels)
        if o["kind"] == "Service":
            spec["selector"].update(labels)
        if o["kind"] == "PodDisruptionBudget":
            spec["selector"]["matchLabels"].update(labels)
    return kustomization, objects


def main():
    holdfast = sys.argv[1]
    kustomization, objects = render()
    listed = set(kustomization["resources"]) | {"kustomization.yaml", "servicemonitor.yaml"}
    listed |= {f for g in kustomization.get("configMapGenerator", []) for f in g["files"]}
    unlisted = sorted(set(os.listdir(DIR)) - listed)
    check(not unlisted, f"every file of {DIR} is used by kustomization.yaml ({unlisted or 'all'})")

    for version in VERSIONS:
        for o in objects:
            name = f'{o["kind"]}/{o["metadata"]["name"]}'
            try:
                kubernetes_validate.validate(copy.deepcopy(o), version, strict=True)
                check(True, f"{name} is valid for Kubernetes {version} (strict)")
            except kubernetes_validate.ValidationError as e:
                check(False, f"{name} for Kubernetes {version}: {e.message} at {list(e.path)}")

    by_kind = {}
    for o in objects:
        by_kind.setdefault(o["kind"], []).append(o)
    deployment = by_kind["Deployment"][0]
    pod = deployment["spec"]["template"]
    pod_labels = pod["metadata"]["labels"]
    container = pod["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    config_map = next(o for o in by_kind["ConfigMap"] if o["metadata"]["name"] == "holdfast")
    config = tomllib.loads(config_map["data"]["holdfast.toml"])
    listen = config["listen"]

    def selects(selector):
        return all(pod_labels.get(k) == v for k, v in selector.items())

    check(deployment["spec"]["replicas"] >= 2, "two or more replicas")
    check(selects(deployment["spec"]["selector"]["matchLabels"]), "the Deployment selects its pods")
    for s in by_kind["Service"]:
        check(selects(s["spec"]["selector"]), f'Service/{s["metadata"]["name"]} selects the pods')
        for p in s["spec"]["ports"]:
            check(p["targetPort"] in ports, f'Service/{s["metadata"]["name"]} port {p["targetPort"]} is a container port')
    pdb = by_kind["PodDisruptionBudget"][0]
    check(selects(pdb["spec"]["selector"]["matchLabels"]), "the PodDisruptionBudget selects the pods")
    check(
        pdb["spec"].get("minAvailable", 0) >= 1 and pdb["spec"]["minAvailable"] < deployment["spec"]["replicas"],
        "the PodDisruptionBudget keeps one serving and lets one go",
    )
    spread = pod["spec"].get("topologySpreadConstraints", [])
    check(any(t["topologyKey"] == "kubernetes.io/hostname" for t in spread), "replicas spread across nodes")

    # The ServiceMonitor (a CRD: no schema here) selects the admin Service and names its port.
    with open(os.path.join(DIR, "servicemonitor.yaml")) as f:
        monitor = yaml.safe_load(f)
    admin_service = next(s for s in by_kind["Service"] if s["metadata"]["name"] == "holdfast-admin")
    check(
        all(admin_service["metadata"]["labels"].get(k) == v for k, v in monitor["spec"]["selector"]["matchLabels"].items()),
        "the ServiceMonitor selects the holdfast-admin Service",
    )
    check(
        all(e["port"] in {p["name"] for p in admin_service["spec"]["ports"]} for e in monitor["spec"]["endpoints"]),
        "the ServiceMonitor scrapes a port the Service names",
    )

    # The config and the pod agree: ports, where it is mounted, the probes, the stop.
    def port(addr):
        return int(addr.rsplit(":", 1)[1])

    check(sorted(port(a) for a in listen["http"]) == [ports["http"]], "listen.http is the http container port")
    check(sorted(port(a) for a in listen["https"]) == [ports["https"]], "listen.https is the https container port")
    check(port(listen["admin"]) == ports["admin"], "listen.admin is the admin container port")
    check(not listen["admin"].startswith("127."), "the admin listener is reachable by the kubelet's probes")
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    config_arg = container["args"][container["args"].index("--config") + 1]
    check(os.path.dirname(config_arg) == mounts["config"], "holdfast runs the mounted ConfigMap's file")
    readiness, liveness = container["readinessProbe"], container["livenessProbe"]
    check(readiness["httpGet"]["path"] == "/readyz", "readiness asks /readyz (503 only while stopping)")
    check(liveness["httpGet"]["path"] == "/livez", "liveness asks /livez (not /healthz: backends down is no reason to restart)")
    shutdown_delay = duration_s(listen.get("shutdown_delay", "5s"))
    grace = duration_s(listen.get("grace_period", "30s"))
    out_of_service = readiness["periodSeconds"] * readiness["failureThreshold"]
    check(
        out_of_service < shutdown_delay,
        f"the readiness probe takes a stopping pod out ({out_of_service}s) within shutdown_delay ({shutdown_delay}s)",
    )
    termination = pod["spec"]["terminationGracePeriodSeconds"]
    check(
        termination > shutdown_delay + grace,
        f"terminationGracePeriodSeconds ({termination}) > shutdown_delay + grace_period ({shutdown_delay + grace})",
    )
    security = pod["spec"]["securityContext"]
    check(security.get("runAsNonRoot") is True and security.get("runAsUser", 0) != 0, "runs as a non-root user")
    check(container["securityContext"].get("readOnlyRootFilesystem") is True, "read-only root file system")
    check(container["resources"].get("requests"), "resource requests set")
    check(
        any(m == "/run" for m in mounts.values()) and any(e["name"] == "RUNTIME_DIRECTORY" for e in container["env"]),
        "a writable runtime directory (/run)",
    )

    # holdfast check on the rendered config, laid out as mounted (config, tls, admin token).
    with tempfile.TemporaryDirectory() as root:
        for name, path in mounts.items():
            os.makedirs(root + path, exist_ok=True)
        config_file = root + config_arg
        with open(config_file, "w") as f:
            f.write(config_map["data"]["holdfast.toml"])
        tls = root + mounts["tls"]
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-subj", "/CN=origin.example.com", "-days", "30",
             "-keyout", tls + "/tls.key", "-out", tls + "/tls.crt"],
            check=True, capture_output=True,
        )
        with open(root + mounts["admin-token"] + "/token", "w") as f:
            f.write("a-token-of-thirty-two-characters!\n")
        result = subprocess.run([holdfast, "check", "--config", config_file], capture_output=True, text=True)
        check(result.returncode == 0, f"holdfast check on the rendered ConfigMap: {(result.stdout + result.stderr).strip()}")

    if failures:
        print(f"{len(failures)} check(s) failed")
        sys.exit(1)
    print(f"deploy/kubernetes: {len(objects)} objects valid for Kubernetes {' and '.join(VERSIONS)}")


main()
