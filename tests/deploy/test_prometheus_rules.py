"""The Prometheus rules: `promtool check rules` and `promtool test rules`, and that the tests test the shipped queries.

promtool is in Debian's `prometheus` package (`apt-get install prometheus`, listed in .ci/apt-packages).
"""

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPOSITORY = Path(__file__).resolve().parents[2]
RULES_DIRECTORY = REPOSITORY / "deploy/prometheus"
RULES = RULES_DIRECTORY / "shop.rules.yml"
RULE_TESTS = sorted((RULES_DIRECTORY / "tests").glob("*.test.yml"))
AUTOSCALING_COMPONENT = REPOSITORY / "deploy/k8s/components/autoscaling"


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is not installed: apt-get install prometheus (Debian), as .ci/apt-packages lists")
    return path


def run(*command: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


def test_promtool_checks_the_rules(promtool):
    result = run(promtool, "check", "rules", str(RULES), cwd=RULES_DIRECTORY)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 11 rules found" in result.stdout


def test_promtool_runs_the_rule_tests(promtool):
    result = run(promtool, "test", "rules", *map(str, RULE_TESTS), cwd=RULES_DIRECTORY)

    assert result.returncode == 0, result.stdout + result.stderr
    assert [path.name for path in RULE_TESTS] == ["alerts.test.yml", "autoscaling.test.yml"]
    assert result.stdout.count("SUCCESS") == 2


def test_the_two_replica_test_fails_on_rules_that_sum_over_web_replicas(promtool, tmp_path):
    """The test that proves the series is not doubled must catch a rule that doubles it."""
    (tmp_path / "tests").mkdir()
    shutil.copy(RULES_DIRECTORY / "tests/autoscaling.test.yml", tmp_path / "tests")
    summed = RULES.read_text().replace(
        "max by (namespace, queue_name) (celery_queue_length)\n",
        "sum by (namespace, queue_name) (celery_queue_length)\n",
    )
    assert summed != RULES.read_text()
    (tmp_path / "shop.rules.yml").write_text(summed)

    result = run(promtool, "test", "rules", "tests/autoscaling.test.yml", cwd=tmp_path)

    assert result.returncode == 1
    # worker-orders' three queues, 3524 messages, read as 7044: each queue's waiting messages counted once per web
    # replica (the 4 in flight are still taken once).
    assert "exp: {} 3.524E+03\n        got: {} 7.044E+03" in result.stderr


def expressions_under_test() -> set[str]:
    document = yaml.safe_load((RULES_DIRECTORY / "tests/autoscaling.test.yml").read_text())
    return {case["expr"] for test in document["tests"] for case in test.get("promql_expr_test", [])}


def test_the_keda_queries_are_the_tested_ones():
    queries = {
        yaml.safe_load(path.read_text())["spec"]["triggers"][0]["metadata"]["query"]
        for path in (AUTOSCALING_COMPONENT / "keda").glob("scaledobject-*.yaml")
    }

    tested = queries & expressions_under_test()

    # orders and io are tested with two web replicas; heavy and maintenance are io's query on another queue.
    assert tested == {
        'sum(max by (queue_name) (shop:queue_backlog:max{namespace="shop",'
        'queue_name=~"cloud\\\\.eu|cloud\\\\.us|cloud\\\\.ap|public_fallback"}))',
        'sum(max by (queue_name) (shop:queue_backlog:max{namespace="shop",queue_name="analytics"}))',
    }
    assert {query.replace('"heavy"', '"analytics"').replace('"maintenance"', '"analytics"') for query in queries} == (
        tested
    )


def test_the_adapter_query_is_the_tested_one_with_the_matchers_the_adapter_adds():
    config = yaml.safe_load((AUTOSCALING_COMPONENT / "prometheus-adapter/config.yaml").read_text())
    (rule,) = config["externalRules"]
    query = rule["metricsQuery"].replace("<<.Series>>", "shop:queue_backlog:max")

    # An HPA's `In` selector becomes a regex of the values joined; `matchLabels` an equality.
    orders = query.replace(
        "<<.LabelMatchers>>", 'namespace="shop",queue_name=~"cloud.eu|cloud.us|cloud.ap|public_fallback"'
    )
    io = query.replace("<<.LabelMatchers>>", 'namespace="shop",queue_name="analytics"')

    assert {orders, io} <= expressions_under_test()
    assert rule["seriesQuery"].startswith("shop:queue_backlog:max{")
    assert rule["resources"] == {"overrides": {"namespace": {"resource": "namespace"}}}
