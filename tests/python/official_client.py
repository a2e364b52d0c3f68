"""The official Kubernetes Python client against a Spoke hub.

Run by tests/tests/python_client.rs with the hub's config file and a node
running; exits non-zero (with a traceback) on the first surprise. Uses the
typed API classes, so every answer must also deserialize into the
client's models.
"""

import sys
import time

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

NS = "default"


def wait(what, check, limit=90):
    deadline = time.time() + limit
    while time.time() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def gone(read):
    try:
        read()
        return False
    except ApiException as e:
        if e.status == 404:
            return True
        raise


def main(config_file):
    config.load_kube_config(config_file=config_file)
    core = client.CoreV1Api()
    apps = client.AppsV1Api()

    # list
    names = [n.metadata.name for n in core.list_namespace().items]
    assert "default" in names, names
    nodes = core.list_node().items
    assert [n.metadata.name for n in nodes] == ["pi-1"], nodes

    # create, then see it in a watch that starts before it
    start = core.list_namespaced_config_map(NS).metadata.resource_version
    cm = client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name="from-python", labels={"via": "python"}),
        data={"greeting": "hej"},
    )
    created = core.create_namespaced_config_map(NS, cm)
    assert created.metadata.uid, created
    assert created.data == {"greeting": "hej"}, created.data
    selected = core.list_namespaced_config_map(NS, label_selector="via=python").items
    assert [c.metadata.name for c in selected] == ["from-python"], selected
    patched = core.patch_namespaced_config_map(
        "from-python", NS, {"data": {"greeting": "hallo"}}
    )
    assert patched.data["greeting"] == "hallo", patched.data
    seen = []
    w = watch.Watch()
    for event in w.stream(
        core.list_namespaced_config_map,
        NS,
        resource_version=start,
        timeout_seconds=10,
    ):
        if event["object"].metadata.name == "from-python":
            seen.append(event["type"])
            if seen == ["ADDED", "MODIFIED"]:
                w.stop()
    assert seen == ["ADDED", "MODIFIED"], seen

    # a pod on the board, and its log
    pod = client.V1Pod(
        metadata=client.V1ObjectMeta(name="py-hello"),
        spec=client.V1PodSpec(
            restart_policy="Always",
            containers=[
                client.V1Container(
                    name="hello",
                    image="hello:v1",
                    env=[client.V1EnvVar(name="GREETING", value="python says hi")],
                )
            ],
        ),
    )
    core.create_namespaced_pod(NS, pod)
    running = wait(
        "py-hello to run",
        lambda: (p := core.read_namespaced_pod("py-hello", NS)).status.phase == "Running" and p,
    )
    assert running.spec.node_name == "pi-1", running.spec
    log = wait(
        "a line of py-hello's log",
        lambda: (t := core.read_namespaced_pod_log("py-hello", NS)) and "count=" in t and t,
    )
    assert "python says hi from a Wasm pod" in log, log
    # since_seconds and previous (sent as "True") reach the board
    recent = core.read_namespaced_pod_log("py-hello", NS, since_seconds=3600, tail_lines=1)
    assert "count=" in recent and recent.count("\n") == 1, recent
    try:
        core.read_namespaced_pod_log("py-hello", NS, previous=True)
        raise AssertionError("a pod that never restarted has a previous log")
    except ApiException as e:
        assert e.status == 400 and "previous terminated container" in e.body, e

    # a typed Deployment round trip
    deploy = client.V1Deployment(
        metadata=client.V1ObjectMeta(name="py-web"),
        spec=client.V1DeploymentSpec(
            replicas=0,
            selector=client.V1LabelSelector(match_labels={"app": "py-web"}),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels={"app": "py-web"}),
                spec=client.V1PodSpec(
                    containers=[client.V1Container(name="web", image="hello:v1")]
                ),
            ),
        ),
    )
    apps.create_namespaced_deployment(NS, deploy)
    listed = apps.list_namespaced_deployment(NS).items
    assert [d.metadata.name for d in listed] == ["py-web"], listed
    scale = apps.read_namespaced_deployment_scale("py-web", NS)
    assert scale.spec.replicas == 0, scale

    # delete, and wait until each is gone
    core.delete_namespaced_pod("py-hello", NS)
    core.delete_namespaced_config_map("from-python", NS)
    apps.delete_namespaced_deployment("py-web", NS)
    wait("py-hello gone", lambda: gone(lambda: core.read_namespaced_pod("py-hello", NS)))
    wait("from-python gone", lambda: gone(lambda: core.read_namespaced_config_map("from-python", NS)))
    wait("py-web gone", lambda: gone(lambda: apps.read_namespaced_deployment("py-web", NS)))
    try:
        core.read_namespaced_pod("py-hello", NS)
        raise AssertionError("read of a deleted pod succeeded")
    except ApiException as e:
        assert e.status == 404, e
    print("official client: ok")


if __name__ == "__main__":
    main(sys.argv[1])
