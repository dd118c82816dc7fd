"""compose.yaml's promises, checked on the project compose-check resolved from it
(deploy/compose/test.sh; PROJECT is that JSON), and held to the Helm chart's values:
the same services, ports, databases and migrations.
"""

import os
import pathlib
import re

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[3]
PROJECT = pathlib.Path(os.environ.get("PROJECT", ROOT / ".local" / "compose" / "project.json"))
CHART_VALUES = yaml.safe_load((ROOT / "k8s" / "orders-platform" / "values.yaml").read_text())
SERVICES = CHART_VALUES["services"]
# The chart names each service's database by its Secret; compose by the database itself.
DATABASES = {"orders-write-db": "orders_write", "orders-read-db": "orders_read", "order-processor-db": "order_processor"}


@pytest.fixture(scope="module")
def services():
    # JSON is YAML: PyYAML reads it without another dependency.
    return yaml.safe_load(PROJECT.read_text())["services"]


def duration_seconds(text):
    match = re.fullmatch(r"(\d+)s", text)
    assert match, text
    return int(match[1])


def test_it_runs_the_whole_platform(services):
    migrations = {f"{name}-migrate" for name, svc in SERVICES.items() if svc.get("migrate")}
    assert set(services) == set(SERVICES) | migrations | {"kafka", "postgres", "topics"}


@pytest.mark.parametrize("name", list(SERVICES))
def test_each_service_is_built_from_the_containerfile(services, name):
    svc = services[name]
    assert svc["build"]["dockerfile"] == "deploy/containers/Containerfile"
    assert svc["build"]["args"] == {"SERVICE": name}
    assert svc["image"].endswith(f"/{name}:{CHART_VALUES['image']['tag']}")


@pytest.mark.parametrize("name", list(SERVICES))
def test_each_service_runs_unprivileged_and_drains(services, name):
    svc = services[name]
    assert svc["read_only"] is True
    assert svc["user"].split(":")[0] == "65532"
    assert svc["cap_drop"] == ["ALL"]
    assert "no-new-privileges:true" in svc["security_opt"]
    drain = duration_seconds(svc["environment"]["SHUTDOWN_TIMEOUT"])
    assert duration_seconds(svc["stop_grace_period"]) > drain


@pytest.mark.parametrize("name", list(SERVICES))
def test_each_service_listens_where_the_chart_says(services, name):
    chart = SERVICES[name]
    svc = services[name]
    assert svc["environment"][chart["portVariable"]] == f"0.0.0.0:{chart['port']}"
    assert [(p["target"], p["published"]) for p in svc["ports"]] == [(chart["port"], str(chart["port"]))]
    assert svc["environment"]["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"


@pytest.mark.parametrize("name", list(SERVICES))
def test_each_service_starts_after_its_topics_and_migrations(services, name):
    chart = SERVICES[name]
    depends = services[name].get("depends_on", {})
    assert depends["topics"]["condition"] == "service_completed_successfully"
    secret = chart.get("databaseSecret")
    if not secret:
        assert "DATABASE_URL" not in services[name]["environment"]
        return
    database = DATABASES[secret]
    assert services[name]["environment"]["DATABASE_URL"].endswith(f"@postgres:5432/{database}")
    # The migrate step of the database's owner (the relay uses command-service's).
    (owner,) = [n for n, s in SERVICES.items() if s.get("migrate") and s["databaseSecret"] == secret]
    assert depends[f"{owner}-migrate"]["condition"] == "service_completed_successfully"
    migrate = services[f"{owner}-migrate"]
    assert migrate["command"] == ["migrate"]
    # The image its service builds, built once.
    assert migrate["image"] == services[owner]["image"] and "build" not in migrate
    assert migrate["environment"]["DATABASE_URL"] == services[owner]["environment"]["DATABASE_URL"]
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_the_databases_are_made_on_first_start(services):
    sql = (ROOT / "deploy" / "compose" / "databases.sql").read_text()
    assert sorted(re.findall(r"CREATE DATABASE (\w+);", sql)) == sorted(DATABASES.values())
    mounts = [v["source"] for v in services["postgres"]["volumes"] if v["type"] == "bind"]
    assert any(m.endswith("deploy/compose/databases.sql") for m in mounts)


def test_postgres_is_ready_only_when_it_answers_over_tcp(services):
    # While the image initialises its cluster, a server listens on the Unix socket only.
    assert services["postgres"]["healthcheck"]["test"][-4:] == ["-h", "127.0.0.1", "-U", "postgres"]


def test_kafka_is_one_kraft_node_and_the_topics_are_the_contracts(services):
    env = services["kafka"]["environment"]
    # Its data on the volume, under a fixed cluster id: a new container keeps the topics.
    assert env["KAFKA_LOG_DIRS"] == "/var/lib/kafka/data" and env["CLUSTER_ID"]
    assert any(v["target"] == "/var/lib/kafka/data" for v in services["kafka"]["volumes"])
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    # Topics come only from the contract's table, never from a client's typo.
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert env["KAFKA_ADVERTISED_LISTENERS"] == "PLAINTEXT://kafka:9092"
    topics = services["topics"]
    assert topics["depends_on"]["kafka"]["condition"] == "service_healthy"
    sources = {v["target"]: v["source"] for v in topics["volumes"]}
    assert sources["/topics.txt"].endswith("deploy/topics.txt")
    assert sources["/topics.sh"].endswith("deploy/compose/topics.sh")
