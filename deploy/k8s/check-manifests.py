#!/usr/bin/env python3
"""Checks what kubernetes-validate cannot: that the built manifests of one kustomization hold
together and keep the rules of docs/operations.md. Reads `kubectl kustomize` output (a file, or -
for stdin); prints each fault and exits 1 if there is any. scripts/check-deploy.sh runs it.

    check-manifests.py [--budget-required] built.yaml

- one image everywhere, pinned to a tag or a digest, never `latest`;
- every container non-root, read-only root filesystem, no privilege escalation, no capabilities;
- every Deployment: selector within its pod labels, no `replicas` (its HPA owns the count), one
  HPA and one PDB that select it, rollouts without surge, the wait-for-migrations init container
  when it uses PostgreSQL, gRPC probes on the API port, readiness on its own health service name,
  named ports;
- the migrate Job: `redstore migrate`, ttlSecondsAfterFinished;
- Services select pods and name their ports; the Ingress routes to Services and ports that exist,
  over TLS, for hosts that REDSTORE_ALLOWED_HOSTS lists; sales reaches inventory through a headless
  Service; ConfigMaps referred to exist;
- the PostgreSQL connection budget: the most connections every service's pods may hold at the
  HPAs' maximums (pool size per pod, plus a Kafka worker's where one runs) within the
  `redstore/db-connection-budget` annotation of the redstore-backends ConfigMap.
"""

import sys
from urllib.parse import urlsplit

import yaml

API_PORT = 50051
# Each `redstore serve <service>` and the gRPC health name it reports (src/server.rs health_for).
HEALTH = {
    "inventory": "redstore.inventory.v1.InventoryService",
    "sales": "redstore.sales.v1.SalesService",
    "analytics": "redstore.analytics.v1.AnalyticsService",
    "stream-bridge": "redstore.stream.v1.InventoryStreamService",
    "auth": "redstore.auth.v1.AuthService",
}
# `--db-pool-size` (REDSTORE_DB_POOL_SIZE) when unset (src/main.rs).
DEFAULT_POOL = 32
# The process splits its pool size in two pools of at least 2 each (src/server.rs split_pool_size).
MIN_POOL = 4
# With Kafka, the worker of these services holds this many more (src/kafka_worker.rs WORKER_DB_POOL).
KAFKA_WORKER_POOL = 10
KAFKA_WORKER_SERVICES = {"inventory", "sales", "analytics"}
BUDGET_ANNOTATION = "redstore/db-connection-budget"

faults = []


def fault(message):
    faults.append(message)


def selects(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def pod_spec(resource):
    return resource["spec"]["template"]["spec"]


def env_value(container, name):
    for entry in container.get("env") or []:
        if entry["name"] == name:
            return entry.get("value"), entry.get("valueFrom")
    return None, None


def check_security(where, pod, container):
    pod_sc = pod.get("securityContext") or {}
    sc = container.get("securityContext") or {}
    if not (sc.get("runAsNonRoot") or pod_sc.get("runAsNonRoot")):
        fault(f"{where}: runAsNonRoot is not set")
    if (sc.get("runAsUser", pod_sc.get("runAsUser")) or 0) == 0:
        fault(f"{where}: runs as root (runAsUser 0 or unset)")
    if sc.get("readOnlyRootFilesystem") is not True:
        fault(f"{where}: the root filesystem is not read-only")
    if sc.get("allowPrivilegeEscalation") is not False:
        fault(f"{where}: allowPrivilegeEscalation is not false")
    if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
        fault(f"{where}: capabilities are not all dropped")


def check_image(where, image, images):
    images.add(image)
    if "@sha256:" in image:
        return
    name, _, tag = image.rpartition(":")
    if not name or "/" in tag or not tag:
        fault(f"{where}: image {image} has no tag (pin one in the kustomization's images:)")
    elif tag == "latest":
        fault(f"{where}: image {image} is `latest`")


def main(argv):
    budget_required = "--budget-required" in argv
    paths = [a for a in argv if not a.startswith("--")]
    if len(paths) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    stream = sys.stdin if paths[0] == "-" else open(paths[0], encoding="utf-8")
    docs = [d for d in yaml.safe_load_all(stream) if d]
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], {})[d["metadata"]["name"]] = d

    deployments = by_kind.get("Deployment", {})
    services = by_kind.get("Service", {})
    configmaps = by_kind.get("ConfigMap", {})
    hpas = list(by_kind.get("HorizontalPodAutoscaler", {}).values())
    pdbs = list(by_kind.get("PodDisruptionBudget", {}).values())
    images = set()

    backends = [c for n, c in configmaps.items() if n.startswith("redstore-backends")]
    if len(backends) != 1:
        fault(f"expected one redstore-backends ConfigMap, found {len(backends)}")
    backends_data = backends[0].get("data", {}) if backends else {}
    kafka = bool(backends_data.get("REDSTORE_KAFKA_BROKERS"))

    connections = []
    for name, dep in deployments.items():
        where = f"Deployment {name}"
        spec = dep["spec"]
        labels = spec["template"]["metadata"].get("labels", {})
        if not selects(spec["selector"].get("matchLabels"), labels):
            fault(f"{where}: its selector does not select its own pods")
        if labels.get("app.kubernetes.io/part-of") != "redstore":
            fault(f"{where}: pods lack app.kubernetes.io/part-of=redstore (the NetworkPolicies select it)")
        if "replicas" in spec:
            fault(f"{where}: sets replicas, which its HPA owns")
        surge = ((spec.get("strategy") or {}).get("rollingUpdate") or {}).get("maxSurge")
        if surge not in (0, "0", "0%"):
            fault(f"{where}: rollouts may surge (maxSurge {surge!r}), past the connection budget")
        pod = pod_spec(dep)
        containers = pod["containers"]
        if len(containers) != 1:
            fault(f"{where}: expected one container, found {len(containers)}")
            continue
        c = containers[0]
        args = c.get("args") or []
        if args[:1] != ["serve"] or len(args) < 2 or args[1] not in HEALTH:
            fault(f"{where}: does not run `redstore serve <service>`: {args}")
            continue
        service = args[1]
        for ic in pod.get("initContainers") or []:
            check_security(f"{where} init container {ic['name']}", pod, ic)
            check_image(f"{where} init container {ic['name']}", ic["image"], images)
        check_security(f"{where} container {c['name']}", pod, c)
        check_image(f"{where} container {c['name']}", c["image"], images)
        ports = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
        if None in ports:
            fault(f"{where}: a container port has no name")
        if ports.get("grpc") != API_PORT:
            fault(f"{where}: no port `grpc` on {API_PORT}")
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            grpc = (c.get(probe) or {}).get("grpc")
            if not grpc or grpc.get("port") != API_PORT:
                fault(f"{where}: {probe} is not a gRPC probe on {API_PORT}")
        readiness = ((c.get("readinessProbe") or {}).get("grpc") or {}).get("service")
        if readiness != HEALTH[service]:
            fault(f"{where}: readiness asks for {readiness!r}, the service reports {HEALTH[service]!r}")
        for ref in c.get("envFrom") or []:
            cm = (ref.get("configMapRef") or {}).get("name")
            if cm and cm not in configmaps:
                fault(f"{where}: envFrom names ConfigMap {cm}, which is not built")
        grace = pod.get("terminationGracePeriodSeconds", 30)
        if "--grace-period" in args:
            period = args[args.index("--grace-period") + 1]
            if not period.endswith("s") or int(period[:-1]) >= grace:
                fault(f"{where}: --grace-period {period} does not end before terminationGracePeriodSeconds {grace}")
        uses_pg = env_value(c, "REDSTORE_DATABASE_URL") != (None, None)
        waits = [
            ic for ic in pod.get("initContainers") or [] if (ic.get("args") or [])[:2] == ["migrate", "--wait"]
        ]
        if uses_pg and not waits:
            fault(f"{where}: uses PostgreSQL but has no `redstore migrate --wait` init container")
        if service == "sales":
            url, _ = env_value(c, "REDSTORE_INVENTORY_URL")
            host = urlsplit(url or "").hostname
            target = services.get(host)
            if not target or target["spec"].get("clusterIP") != "None":
                fault(f"{where}: REDSTORE_INVENTORY_URL {url!r} is not a headless Service")
            elif target["spec"].get("selector", {}).get("app") != "inventory":
                fault(f"{where}: REDSTORE_INVENTORY_URL's Service {host} does not select inventory's pods")

        mine = [h for h in hpas if h["spec"]["scaleTargetRef"]["name"] == name]
        if len(mine) != 1:
            fault(f"{where}: {len(mine)} HorizontalPodAutoscalers target it, expected 1")
            continue
        if not any(selects(p["spec"]["selector"].get("matchLabels"), labels) for p in pdbs):
            fault(f"{where}: no PodDisruptionBudget selects its pods")
        pool_value, _ = env_value(c, "REDSTORE_DB_POOL_SIZE")
        pool = max(int(pool_value) if pool_value else DEFAULT_POOL, MIN_POOL) if uses_pg else 0
        worker = KAFKA_WORKER_POOL if uses_pg and kafka and service in KAFKA_WORKER_SERVICES else 0
        pods = mine[0]["spec"]["maxReplicas"]
        connections.append((name, pods, pool, worker))

    for hpa in hpas:
        if hpa["spec"]["scaleTargetRef"]["name"] not in deployments:
            fault(f"HorizontalPodAutoscaler {hpa['metadata']['name']} targets no Deployment")
    for pdb in pdbs:
        sel = pdb["spec"]["selector"].get("matchLabels")
        if not any(selects(sel, d["spec"]["template"]["metadata"].get("labels", {})) for d in deployments.values()):
            fault(f"PodDisruptionBudget {pdb['metadata']['name']} selects no pods")

    for name, job in by_kind.get("Job", {}).items():
        pod = pod_spec(job)
        if "ttlSecondsAfterFinished" not in job["spec"]:
            fault(f"Job {name}: no ttlSecondsAfterFinished (the next apply could not create it again)")
        for c in pod["containers"]:
            check_security(f"Job {name} container {c['name']}", pod, c)
            check_image(f"Job {name} container {c['name']}", c["image"], images)
    if not any((c.get("args") or [])[:1] == ["migrate"] for j in by_kind.get("Job", {}).values()
               for c in pod_spec(j)["containers"]):
        fault("no Job runs `redstore migrate`")
    if len(images) > 1:
        fault(f"more than one image: {sorted(images)}")

    for name, svc in services.items():
        sel = svc["spec"].get("selector")
        targets = [d for d in deployments.values() if selects(sel, d["spec"]["template"]["metadata"].get("labels", {}))]
        if not targets:
            fault(f"Service {name} selects no pods")
        for port in svc["spec"]["ports"]:
            if not port.get("name"):
                fault(f"Service {name}: a port has no name")
            target = port.get("targetPort")
            for d in targets:
                names = {p.get("name") for p in pod_spec(d)["containers"][0].get("ports", [])}
                if isinstance(target, str) and target not in names:
                    fault(f"Service {name}: targetPort {target} is not a port of {d['metadata']['name']}")

    allowed = {h.strip() for h in backends_data.get("REDSTORE_ALLOWED_HOSTS", "").split(",") if h.strip()}
    ingresses = by_kind.get("Ingress", {})
    if not ingresses:
        fault("no Ingress")
    for name, ing in ingresses.items():
        tls_hosts = {h for t in ing["spec"].get("tls") or [] for h in t.get("hosts") or []}
        for rule in ing["spec"].get("rules") or []:
            host = rule.get("host")
            if host not in tls_hosts:
                fault(f"Ingress {name}: host {host} is not served over TLS")
            if host not in allowed and "*" not in allowed:
                fault(f"Ingress {name}: host {host} is not in REDSTORE_ALLOWED_HOSTS ({sorted(allowed)})")
            for path in rule["http"]["paths"]:
                backend = path["backend"]["service"]
                svc = services.get(backend["name"])
                port = backend["port"].get("name")
                if not svc:
                    fault(f"Ingress {name}: {path['path']} goes to Service {backend['name']}, which is not built")
                elif port not in {p.get("name") for p in svc["spec"]["ports"]}:
                    fault(f"Ingress {name}: {path['path']} names port {port} of Service {backend['name']}")

    total = sum(pods * (pool + worker) for _, pods, pool, worker in connections)
    budget = (backends[0]["metadata"].get("annotations") or {}).get(BUDGET_ANNOTATION) if backends else None
    print("PostgreSQL connections at the HPAs' maximums (pods × (pool + Kafka worker)):")
    for name, pods, pool, worker in sorted(connections):
        print(f"  {name:<14} {pods:>3} × ({pool:>3} + {worker:>2}) = {pods * (pool + worker):>4}")
    print(f"  {'total':<14} {total:>27}" + (f"  (budget {budget})" if budget else "  (no budget annotated)"))
    if budget is not None and total > int(budget):
        fault(f"the pods may hold {total} PostgreSQL connections, over the budget of {budget}")
    if budget is None and budget_required:
        fault(f"the redstore-backends ConfigMap has no {BUDGET_ANNOTATION} annotation")

    for f in faults:
        print(f"FAULT: {f}", file=sys.stderr)
    return 1 if faults else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
