"""The Helm chart's promises, checked on what `helm template` renders (k8s/test.sh).

RENDERED is the directory k8s/test.sh rendered the default and the production values
into; HELM and CHART let a test render with other values.
"""

import json
import os
import pathlib
import re
import subprocess

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
CHART = pathlib.Path(os.environ.get("CHART", ROOT / "k8s" / "orders-platform"))
RENDERED = pathlib.Path(os.environ.get("RENDERED", ROOT / ".local" / "chart"))
HELM = os.environ.get("HELM", "helm")

SERVICES = ["command-service", "outbox-relay", "projector", "order-processor", "stats-aggregator"]
PUBLIC = {"command-service": "/commands", "projector": "/queries"}
CONSUMERS = ["order-processor", "stats-aggregator"]


def load(text):
    return [doc for doc in yaml.safe_load_all(text) if doc]


def render(*args):
    out = subprocess.run(
        [HELM, "template", "orders", str(CHART), "--namespace", "orders", *args],
        check=True,
        capture_output=True,
        text=True,
    )
    return load(out.stdout)


@pytest.fixture(scope="module", params=["default", "production"])
def objects(request):
    return load((RENDERED / f"{request.param}.yaml").read_text())


def of_kind(objects, kind):
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def values(name="values.yaml"):
    return yaml.safe_load((CHART / name).read_text())


def test_every_service_has_its_objects(objects):
    for kind in ["Deployment", "Service", "ServiceAccount", "HorizontalPodAutoscaler", "PodDisruptionBudget", "NetworkPolicy"]:
        names = set(of_kind(objects, kind))
        assert set(SERVICES) <= names, f"{kind}: {sorted(names)}"


def test_probes_hit_the_runtimes_real_paths(objects):
    routes = (ROOT / "crates" / "runtime" / "src" / "http.rs").read_text()
    for path in ["/healthz", "/readyz"]:
        assert f'route("{path}"' in routes, f"the runtime serves no {path}"
    for name, deployment in of_kind(objects, "Deployment").items():
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        port = {p["name"]: p["containerPort"] for p in container["ports"]}
        # A public API's probes knock on its admin port, where its operations are.
        ops = "admin" if name in PUBLIC else "http"
        assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": ops}, name
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": ops}, name
        assert container["startupProbe"]["httpGet"] == {"path": "/healthz", "port": ops}, name
        # The service listens where the probes knock: its address variables name the ports.
        env = {e["name"]: e.get("value") for e in container["env"]}
        if name in PUBLIC:
            assert env["HTTP_ADDR"] == f"0.0.0.0:{port['http']}", name
        assert env["ADMIN_ADDR"] == f"0.0.0.0:{port[ops]}", f"{name}: admin on {env['ADMIN_ADDR']}, probed on {port}"


def test_pods_run_unprivileged(objects):
    workloads = list(of_kind(objects, "Deployment").values()) + list(of_kind(objects, "Job").values())
    assert workloads
    for workload in workloads:
        name = workload["metadata"]["name"]
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert pod["automountServiceAccountToken"] is False, name
        # Only the local play (k8s/play) shares the node's network.
        assert "hostNetwork" not in pod, name
        for container in pod["containers"]:
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True, name
            assert security["allowPrivilegeEscalation"] is False, name
            assert security["capabilities"]["drop"] == ["ALL"], name
            assert container["resources"]["requests"]["cpu"], name
            assert container["resources"]["requests"]["memory"], name
            assert container["resources"]["limits"]["memory"], name


def test_the_grace_period_outlasts_the_drain(objects):
    for name, deployment in of_kind(objects, "Deployment").items():
        pod = deployment["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        env = {e["name"]: e.get("value") for e in container["env"]}
        drain = int(re.fullmatch(r"(\d+)s", env["SHUTDOWN_TIMEOUT"]).group(1))
        assert pod["terminationGracePeriodSeconds"] > drain, name


def test_consumers_scale_no_further_than_the_partitions_of_orders(objects):
    topics = {t["name"]: t for t in values()["topics"]}
    partitions = topics["orders"]["partitions"]
    autoscalers = of_kind(objects, "HorizontalPodAutoscaler")
    for name in CONSUMERS:
        spec = autoscalers[name]["spec"]
        assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}
        assert spec["minReplicas"] <= spec["maxReplicas"] <= partitions, name
    for name, deployment in of_kind(objects, "Deployment").items():
        # Replicas belong to the autoscaler: a Deployment that set them would fight it.
        assert "replicas" not in deployment["spec"], name


def test_the_gateway_routes_commands_and_queries(objects):
    (ingress,) = of_kind(objects, "Ingress").values()
    services = of_kind(objects, "Service")
    (rule,) = ingress["spec"]["rules"]
    routes = {p["path"]: p["backend"]["service"] for p in rule["http"]["paths"]}
    for service, prefix in PUBLIC.items():
        port = services[service]["spec"]["ports"][0]["port"]
        assert routes[prefix] == {"name": service, "port": {"number": port}}, routes


def test_production_serves_the_api_over_tls():
    (ingress,) = of_kind(load((RENDERED / "production.yaml").read_text()), "Ingress").values()
    (tls,) = ingress["spec"]["tls"]
    assert tls["secretName"] and tls["hosts"] == [ingress["spec"]["rules"][0]["host"]]


def test_the_gateway_api_route_is_there_on_request():
    objects = render("--set", "gateway.httpRoute.enabled=true", "--set", "gateway.ingress.enabled=false")
    assert not of_kind(objects, "Ingress")
    (route,) = of_kind(objects, "HTTPRoute").values()
    backends = {r["matches"][0]["path"]["value"]: r["backendRefs"][0]["name"] for r in route["spec"]["rules"]}
    assert backends == {prefix: service for service, prefix in PUBLIC.items()}


def test_only_the_gateway_and_monitoring_reach_the_pods(objects):
    services = of_kind(objects, "Service")
    for name, policy in of_kind(objects, "NetworkPolicy").items():
        spec = policy["spec"]
        assert spec["policyTypes"] == ["Ingress"], name
        ports = {p["name"]: p["port"] for p in services[name]["spec"]["ports"]}
        monitoring, *others = spec["ingress"]
        (peer,) = monitoring["from"]
        assert peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] == "monitoring", name
        assert sorted(p["port"] for p in monitoring["ports"]) == sorted(ports.values()), f"{name}: monitoring reaches every port"
        if name in PUBLIC:
            (gateway,) = others
            assert gateway["from"], f"{name}: the gateway cannot reach it"
            assert [p["port"] for p in gateway["ports"]] == [ports["http"]], f"{name}: the gateway reaches more than its API"
        else:
            assert not others, f"{name} is reachable from {others}: only monitoring may reach an admin port"


def test_no_credential_is_inlined(objects):
    assert not of_kind(objects, "Secret"), "the chart creates no Secret: credentials are the operator's"
    for workload in list(of_kind(objects, "Deployment").values()) + list(of_kind(objects, "Job").values()):
        for container in workload["spec"]["template"]["spec"]["containers"]:
            for env in container["env"]:
                if env["name"] in ("DATABASE_URL", "KAFKA_PROPERTIES"):
                    assert "value" not in env and "secretKeyRef" in env["valueFrom"], env
    for config in of_kind(objects, "ConfigMap").values():
        for key, value in config["data"].items():
            assert not re.search(r"password|secret|://[^/@]+:[^/@]+@", f"{key}={value}", re.I), key


def test_services_that_own_a_schema_migrate_before_they_roll(objects):
    jobs = {j["metadata"]["name"].rsplit("-migrate-", 1)[0]: j for j in of_kind(objects, "Job").values()}
    # The owners of a database; the relay uses command-service's.
    assert set(jobs) == {"command-service", "projector", "order-processor"}
    for job in jobs.values():
        assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
        (container,) = job["spec"]["template"]["spec"]["containers"]
        assert container["args"] == ["migrate"]
        # A pre-install hook runs before the chart's ConfigMap and ServiceAccounts exist.
        assert "envFrom" not in container
        assert "serviceAccountName" not in job["spec"]["template"]["spec"]


def test_the_topics_are_the_contracts():
    listed = {}
    for line in (ROOT / "deploy" / "topics.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, partitions, configs = line.split()
            listed[name] = (int(partitions), dict(c.split("=", 1) for c in configs.split(",")))
    topics = {t["name"]: (t["partitions"], t["config"]) for t in values()["topics"]}
    assert set(topics) == set(listed)
    for name, (partitions, config) in topics.items():
        assert partitions == listed[name][0], name
        for key, value in listed[name][1].items():
            assert str(config.get(key)) == value, f"{name}: {key}"
    strimzi = of_kind(load((RENDERED / "production.yaml").read_text()), "KafkaTopic")
    assert {t["spec"]["topicName"] for t in strimzi.values()} == set(listed)


def test_production_ships_the_alerts_and_the_dashboard_of_deploy_observability():
    objects = load((RENDERED / "production.yaml").read_text())
    (rule,) = of_kind(objects, "PrometheusRule").values()
    alerts = yaml.safe_load((ROOT / "deploy" / "observability" / "alerts.yml").read_text())
    assert rule["spec"] == alerts
    assert rule["metadata"]["labels"]["release"] == "prometheus"
    dashboard = of_kind(objects, "ConfigMap")["orders-platform-dashboard"]
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    shipped = json.loads(dashboard["data"]["orders-platform.json"])
    assert shipped == json.loads((ROOT / "deploy" / "observability" / "dashboard.json").read_text())
    # Off by default: a cluster without the Prometheus Operator has no such kind.
    assert not of_kind(load((RENDERED / "default.yaml").read_text()), "PrometheusRule")


def acl_table(path):
    rows = []
    for line in path.read_text().splitlines():
        fields = line.split()
        if fields and not fields[0].startswith("#"):
            user, operations, resource, names = fields[:4]
            pattern = fields[4] if len(fields) > 4 else "literal"
            for name in names.split(","):
                rows.append((user, tuple(operations.split(",")), resource, name, pattern))
    return rows


def test_the_kafka_users_have_the_acls_of_deploy_and_nothing_more():
    table = acl_table(ROOT / "deploy" / "kafka-acls.txt")
    assert acl_table(CHART / "files" / "kafka-acls.txt") == table, "files/kafka-acls.txt differs from deploy/"
    users = of_kind(load((RENDERED / "production.yaml").read_text()), "KafkaUser")
    assert set(users) == set(SERVICES)
    kinds = {"topic": "topic", "group": "group", "transactional-id": "transactionalId"}
    for name, user in users.items():
        assert user["spec"]["authentication"]["type"] == "scram-sha-512"
        rendered = sorted(
            (name, tuple(a["operations"]), a["resource"]["type"], a["resource"]["name"], a["resource"]["patternType"])
            for a in user["spec"]["authorization"]["acls"]
        )
        patterns = {"literal": "literal", "prefixed": "prefix"}
        expected = sorted((u, ops, kinds[r], n, patterns[p]) for (u, ops, r, n, p) in table if u == name)
        assert rendered == expected, name


def env_of(container):
    return {e["name"]: e for e in container.get("env", [])}


def test_production_reaches_kafka_and_postgres_secured_and_asks_for_tokens():
    objects = load((RENDERED / "production.yaml").read_text())
    for name, deployment in of_kind(objects, "Deployment").items():
        pod = deployment["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        env = env_of(container)
        assert env["KAFKA_SECURITY_PROTOCOL"]["value"] == "sasl_ssl", name
        assert env["KAFKA_SASL_USERNAME"]["value"] == name
        volumes = {v["name"]: v for v in pod["volumes"]}
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        # The password is a mounted file of the user's own Secret (Strimzi names it after the user).
        assert volumes["kafka-user"]["secret"]["secretName"] == name
        assert env["KAFKA_SASL_PASSWORD_FILE"]["value"] == mounts["kafka-user"] + "/password"
        assert env["KAFKA_SSL_CA_LOCATION"]["value"] == mounts["kafka-ca"] + "/ca.crt"
        assert ("postgres-ca" in mounts) == (name != "stats-aggregator"), name
        if name in PUBLIC:
            assert env["AUTH"]["value"] == "jwt"
            assert {"AUTH_ISSUER", "AUTH_AUDIENCE", "AUTH_JWKS"} <= set(env), name
        else:
            assert "AUTH" not in env, f"{name} has no public API"
    owners = {"command-service": "orders-write-owner-db", "projector": "orders-read-owner-db",
              "order-processor": "order-processor-owner-db"}
    for job in of_kind(objects, "Job").values():
        service = job["metadata"]["name"].rsplit("-migrate-", 1)[0]
        (container,) = job["spec"]["template"]["spec"]["containers"]
        url = env_of(container)["DATABASE_URL"]["valueFrom"]["secretKeyRef"]["name"]
        assert url == owners[service], "the migrations run as the schema's owner"
        assert "KAFKA_SECURITY_PROTOCOL" not in env_of(container)


def test_the_public_apis_say_how_callers_are_authenticated():
    with pytest.raises(subprocess.CalledProcessError) as refused:
        render("--set", "auth.mode=maybe")
    assert "auth.mode is jwt or off" in refused.value.stderr
    with pytest.raises(subprocess.CalledProcessError) as refused:
        render("--set", "auth.issuer=")
    assert "auth.issuer is required" in refused.value.stderr
    for deployment in of_kind(render("--set", "auth.mode=off"), "Deployment").values():
        env = env_of(deployment["spec"]["template"]["spec"]["containers"][0])
        assert env.get("AUTH", {"value": "off"})["value"] == "off" and "AUTH_ISSUER" not in env


def test_the_admin_endpoints_ask_for_the_admin_token_in_production():
    objects = load((RENDERED / "production.yaml").read_text())
    for name, deployment in of_kind(objects, "Deployment").items():
        pod = deployment["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert volumes["admin-token"]["secret"]["secretName"] == "orders-admin-token", name
        assert env_of(container)["ADMIN_TOKEN_FILE"]["value"] == mounts["admin-token"] + "/token", name
    for name, monitor in of_kind(objects, "ServiceMonitor").items():
        (endpoint,) = monitor["spec"]["endpoints"]
        assert endpoint["port"] == ("admin" if name in PUBLIC else "http"), name
        assert endpoint["bearerTokenSecret"] == {"name": "orders-admin-token", "key": "token"}, name
