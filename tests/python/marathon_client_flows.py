"""marathon-python (the `marathon` package on PyPI), unmodified, against capstan's Marathon sandbox.

Usage: python marathon_client_flows.py http://127.0.0.1:PORT

Exits 0 when every flow worked. What it leaves behind is checked by tests/marathon_client.rs:
  /capstan-py/web     cmd "python3 -m http.server $PORT0 --v2", 2 instances, label team=py
  /capstan-py/multi/a and /capstan-py/multi/b (made by update_apps)
and no group /capstan-py/shop.
"""

import collections
import collections.abc

# marathon 0.13.0 predates Python 3.10, which removed `collections.Iterable` (marathon/util.py
# uses it); this alias is the only thing added to the client's world.
if not hasattr(collections, "Iterable"):
    collections.Iterable = collections.abc.Iterable

import queue
import sys
import threading
import time

import requests

import marathon
from marathon import MarathonClient
from marathon.exceptions import ConflictError, MarathonHttpError, NotFoundError
from marathon.models import MarathonApp, MarathonConstraint, MarathonGroup, MarathonHealthCheck
from marathon.models.events import (
    MarathonApiPostEvent,
    MarathonDeploymentFailed,
    MarathonDeploymentInfo,
    MarathonDeploymentStepSuccess,
    MarathonDeploymentSuccess,
    MarathonEventStreamAttached,
    MarathonGroupChangeSuccess,
)

URL = sys.argv[1]
c = MarathonClient(URL, timeout=10)


def step(name):
    print(f"-- {name}", flush=True)


def rollout(ms):
    """The sandbox's own knob (not Marathon's API): how long launching tasks takes."""
    r = requests.put(f"{URL}/_sandbox/faults", json={"rollout_ms": ms}, timeout=5)
    r.raise_for_status()


def wait_for(deployment_id, limit=10.0):
    """Poll the deployments list until `deployment_id` is gone, as marathon-python's docs say."""
    deadline = time.time() + limit
    while any(d.id == deployment_id for d in c.list_deployments()):
        assert time.time() < deadline, f"deployment {deployment_id} did not finish"
        time.sleep(0.02)


step("ping, info, leader, metrics")
# marathon-python asks for JSON (Accept: application/json), which Marathon 1.x answers with
# the JSON string "pong".
assert c.ping() == b'"pong"', c.ping()
host_port = URL.split("://", 1)[1]
info = c.get_info()
assert info.name == "marathon" and info.leader == host_port, info
assert info.marathon_config.hostname == "127.0.0.1"
assert info.zookeeper_config.zk_max_versions is not None
assert c.get_leader() == {"leader": host_port}
assert "gauges" in c.get_metrics()

step("create an app")
app = MarathonApp(
    cmd="python3 -m http.server $PORT0",
    cpus=0.1,
    mem=32,
    instances=2,
    labels={"team": "py"},
    env={"MODE": "test"},
    constraints=[MarathonConstraint("hostname", "UNIQUE")],
    health_checks=[MarathonHealthCheck(protocol="HTTP", path="/health", port_index=0)],
)
created = c.create_app("/capstan-py/web", app)
assert isinstance(created, MarathonApp), created
assert created.id == "/capstan-py/web"
assert created.instances == 2 and created.cpus == 0.1 and created.mem == 32
assert created.disk == 0 and created.executor == "" and created.require_ports is False
assert created.backoff_factor == 1.15 and created.backoff_seconds == 1 and created.max_launch_delay_seconds == 3600
assert len(created.ports) == 1 and created.ports[0] >= 10000, created.ports
assert created.port_definitions[0].port == created.ports[0]
assert created.upgrade_strategy.minimum_health_capacity == 1
hc = created.health_checks[0]
assert (hc.path, hc.grace_period_seconds, hc.interval_seconds, hc.timeout_seconds) == ("/health", 15, 10, 20)
assert created.constraints[0].operator == "UNIQUE"
assert len(created.deployments) == 1
first_version = created.version

try:
    c.create_app("/capstan-py/web", MarathonApp(cmd="x"))
    raise AssertionError("a duplicate create must fail")
except ConflictError as e:
    assert e.status_code == 409 and "already exists" in e.error_message, e

try:
    c.create_app("/capstan-py/bad", MarathonApp(cmd="x", cpus="lots"))
    raise AssertionError("an invalid app must be refused")
except MarathonHttpError as e:
    assert e.status_code == 422 and e.error_details[0]["path"] == "/cpus", e.error_details

step("list and get apps")
apps = c.list_apps()
assert [a.id for a in apps] == ["/capstan-py/web"], apps
assert apps[0].tasks_running == 2 and apps[0].deployments == []
assert [a.id for a in c.list_apps(app_id="web")] == ["/capstan-py/web"]
assert c.list_apps(app_id="nothing") == []
assert [a.id for a in c.list_apps(label="team==py")] == ["/capstan-py/web"]
assert c.list_apps(cmd="nope") == []
with_tasks = c.list_apps(embed_tasks=True, embed_counts=True, embed_deployments=True, embed_task_stats=True,
                         embed_readiness=True)
assert len(with_tasks[0].tasks) == 2
assert with_tasks[0].task_stats.total_summary.stats.counts.running == 2
got = c.get_app("/capstan-py/web")
assert len(got.tasks) == 2 and got.tasks_healthy == 2 and got.tasks_staged == 0
assert all(t.started_at is not None and t.host == "127.0.0.1" for t in got.tasks)
assert got.tasks[0].health_check_results[0].alive is True
assert got.version_info.last_config_change_at is not None
try:
    c.get_app("/capstan-py/none")
    raise AssertionError("an unknown app must be 404")
except NotFoundError as e:
    assert "does not exist" in e.error_message, e

step("update an app (read, change, send back)")
got.cmd = "python3 -m http.server $PORT0 --v2"
result = c.update_app("/capstan-py/web", got)
assert set(result) == {"deploymentId", "version"}, result
wait_for(result["deploymentId"])
updated = c.get_app("/capstan-py/web")
assert updated.cmd.endswith("--v2") and updated.version == result["version"]
assert updated.env == {"MODE": "test"} and updated.labels == {"team": "py"}
assert {t.id for t in updated.tasks}.isdisjoint({t.id for t in got.tasks}), "a config change restarts"

step("scale an app")
wait_for(c.scale_app("/capstan-py/web", instances=3)["deploymentId"])
assert c.get_app("/capstan-py/web").instances == 3
wait_for(c.scale_app("/capstan-py/web", delta=-1)["deploymentId"])
scaled = c.get_app("/capstan-py/web")
assert scaled.instances == 2 and len(scaled.tasks) == 2

step("versions and rollback")
versions = c.list_versions("/capstan-py/web")
assert len(versions) == 4 and versions[-1] == first_version and versions == sorted(versions, reverse=True), versions
old = c.get_version("/capstan-py/web", first_version)
assert old.cmd == "python3 -m http.server $PORT0" and old.instances == 2
wait_for(c.rollback_app("/capstan-py/web", first_version)["deploymentId"])
assert c.get_app("/capstan-py/web").cmd == "python3 -m http.server $PORT0"
wait_for(c.rollback_app("/capstan-py/web", versions[0])["deploymentId"])
assert c.get_app("/capstan-py/web").cmd.endswith("--v2")

step("restart")
before = {t.id for t in c.list_tasks("/capstan-py/web")}
wait_for(c.restart_app("/capstan-py/web")["deploymentId"])
after = {t.id for t in c.list_tasks("/capstan-py/web")}
assert len(after) == 2 and before.isdisjoint(after), (before, after)

step("tasks")
tasks = c.list_tasks()
assert len(tasks) == 2 and all(t.app_id == "/capstan-py/web" for t in tasks)
assert all(t.id.startswith("capstan-py_web.") for t in tasks), tasks
endpoints = c.list_endpoints()
assert len(endpoints) == 2 and endpoints[0].service_port == scaled.ports[0]
killed = c.kill_task("/capstan-py/web", tasks[0].id)
assert killed.id == tasks[0].id
assert len(c.list_tasks("/capstan-py/web")) == 2, "a killed task is replaced"
assert c.kill_given_tasks([c.list_tasks("/capstan-py/web")[0].id]) is True
assert len(c.kill_tasks("/capstan-py/web")) == 2
assert len(c.list_tasks("/capstan-py/web")) == 2

step("groups")
group = MarathonGroup(
    id="/capstan-py/shop",
    apps=[MarathonApp(id="/capstan-py/shop/api", cmd="api", instances=1),
          MarathonApp(id="/capstan-py/shop/db", cmd="db", instances=1)],
)
made = c.create_group(group)
assert set(made) >= {"version", "deploymentId"}, made
wait_for(made["deploymentId"])
shop = c.get_group("/capstan-py/shop")
assert sorted(a.id for a in shop.apps) == ["/capstan-py/shop/api", "/capstan-py/shop/db"]
top = c.list_groups()
assert [g.id for g in top] == ["/capstan-py"], top
assert any(g.id == "/capstan-py/shop" for g in top[0].groups)
wait_for(c.scale_group("/capstan-py/shop", 2)["deploymentId"])
assert c.get_app("/capstan-py/shop/api").instances == 2
shop = c.get_group("/capstan-py/shop")
shop.apps = [a for a in shop.apps if a.id == "/capstan-py/shop/api"]
wait_for(c.update_group("/capstan-py/shop", shop)["deploymentId"])
assert [a.id for a in c.get_group("/capstan-py/shop").apps] == ["/capstan-py/shop/api"]
wait_for(c.rollback_group("/capstan-py/shop", made["version"])["deploymentId"])
rolled = c.get_group("/capstan-py/shop")
assert sorted((a.id, a.instances) for a in rolled.apps) == [("/capstan-py/shop/api", 1), ("/capstan-py/shop/db", 1)]
deleted = c.delete_group("/capstan-py/shop")
assert "version" in deleted, deleted
try:
    c.get_group("/capstan-py/shop")
    raise AssertionError("a deleted group must be 404")
except NotFoundError:
    pass

step("update_apps")
multi = c.update_apps([MarathonApp(id="/capstan-py/multi/a", cmd="a"), MarathonApp(id="/capstan-py/multi/b", cmd="b")])
wait_for(multi["deploymentId"])
assert {a.id for a in c.list_apps(app_id="multi")} == {"/capstan-py/multi/a", "/capstan-py/multi/b"}

step("deployments, locks and the event stream")
events = queue.Queue()


def listen():
    for event in c.event_stream():
        events.put(event)


threading.Thread(target=listen, daemon=True).start()
attached = events.get(timeout=5)
assert isinstance(attached, MarathonEventStreamAttached), attached

# Long enough that the checks below happen while the deployment runs, even on a busy machine.
rollout(2000)
throwaway = c.create_app("/capstan-py/slow", MarathonApp(cmd="slow", instances=2))
deployment_id = throwaway.deployments[0].id
running = c.list_deployments()
assert [d.id for d in running] == [deployment_id], running
d = running[0]
assert d.affected_apps == ["/capstan-py/slow"] and d.total_steps == 2 and d.current_step == 2
assert d.steps[1].actions[0].action == "ScaleApplication" and d.steps[1].actions[0].app == "/capstan-py/slow"
assert d.current_actions[0].app == "/capstan-py/slow"
slow = c.get_app("/capstan-py/slow")
assert slow.tasks_staged == 2 and slow.deployments[0].id == deployment_id
assert all(t.started_at is None for t in slow.tasks)
items = c.list_queue()
assert [(q.app.id, q.count) for q in items] == [("/capstan-py/slow", 2)], items
c.reset_delay("/capstan-py/slow")
try:
    c.scale_app("/capstan-py/slow", instances=3)
    raise AssertionError("a locked app must be 409")
except ConflictError as e:
    assert "locked" in e.error_message, e
forced = c.scale_app("/capstan-py/slow", instances=3, force=True)
assert [d.id for d in c.list_deployments()] == [forced["deploymentId"]]
assert c.delete_deployment(forced["deploymentId"], force=True) == {}
assert c.list_deployments() == []
again = c.update_app("/capstan-py/slow", MarathonApp(cmd="slower"))
rolled_back = c.delete_deployment(again["deploymentId"])
assert set(rolled_back) == {"deploymentId", "version"}, rolled_back
wait_for(rolled_back["deploymentId"])
assert c.get_app("/capstan-py/slow").cmd == "slow"
wait_for(c.delete_app("/capstan-py/slow")["deploymentId"])
rollout(0)

seen = []
deadline = time.time() + 5
while time.time() < deadline:
    try:
        seen.append(events.get(timeout=0.5))
    except queue.Empty:
        break
kinds = {type(e) for e in seen}
for k in (MarathonApiPostEvent, MarathonDeploymentInfo, MarathonDeploymentStepSuccess, MarathonDeploymentSuccess,
          MarathonGroupChangeSuccess):
    assert k in kinds, (k, [type(e).__name__ for e in seen])
info_event = next(e for e in seen if isinstance(e, MarathonDeploymentInfo))
assert info_event.plan.id == deployment_id and info_event.plan.steps[0].actions[0].action == "StartApplication"
assert any(isinstance(e, MarathonDeploymentFailed) and e.id == deployment_id for e in seen), "cancelled by force"
assert any(isinstance(e, MarathonDeploymentSuccess) and e.id == rolled_back["deploymentId"] for e in seen)

step("event subscriptions")
sub = c.create_event_subscription("http://localhost:9292/callback")
assert sub["eventType"] == "subscribe_event" and sub["callbackUrl"] == "http://localhost:9292/callback"
assert c.list_event_subscriptions() == ["http://localhost:9292/callback"]
assert c.delete_event_subscription("http://localhost:9292/callback")["eventType"] == "unsubscribe_event"
assert c.list_event_subscriptions() == []

step("delete an app, and the leader abdicates (the sandbox stays leader)")
c.create_app("/capstan-py/gone", MarathonApp(cmd="x", instances=0))
c.delete_app("/capstan-py/gone")
assert all(a.id != "/capstan-py/gone" for a in c.list_apps())
assert c.delete_leader() == {"message": "Leadership abdicated"}
assert c.get_leader() == {"leader": host_port}

print("all marathon-python flows passed", flush=True)
