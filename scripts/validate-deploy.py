#!/usr/bin/env python3
"""Checks on rendered manifests that kubernetes-validate and checkov do not
make; scripts/validate-deploy.sh runs it on every rendered kustomization.

  validate-deploy.py crds SCHEMA_DIR RENDERED
      validates every cert-manager.io object against the vendored JSON
      schemas (deploy/kubernetes/schemas/cert-manager) and prints the other
      objects, for kubernetes-validate (which has no schema for them);
  validate-deploy.py selftest SCHEMA_DIR RENDERED_HA
      breaks copies of the ha render one way each (an http:// geo endpoint,
      a service without TLS, the geo-service let into the API, ...) and
      fails unless the checks above refuse every one;
  validate-deploy.py checks RENDERED [--require-tls] [--fleet]
      NetworkPolicies: an ipBlock open to the whole internet excepts every
      special-purpose range; no egress rule to every destination; the
      control-service's API admits only its labelled clients, never the
      geo-service; its agent port only agent pods of the agents' namespace
      (named, never any namespace); nothing reaches an agent but the
      metrics scrape. Pod Security Admission: each namespace enforces the
      strictest level its pods allow, warns and audits at restricted, and
      only the pods listed below fall short of restricted, for the reasons
      listed. The embedded fail2ban: a control-service mounts the node's
      socket exactly when it serves the host `local`. checkov's per-object
      waivers (annotations) are listed in deploy/checkov-waivers.txt with a
      reason. The agent: fail2ban's mounts read-only, its state on the
      node, no capability, a read-only root filesystem, never two on a
      node. TLS (with --require-tls, or wherever a Certificate is
      rendered): no plaintext gRPC between the services, nor from the
      agents. --fleet (overlays/ha): the control plane's namespace enforces
      restricted and serves no host `local`, the agents run as a DaemonSet
      in a namespace of their own.

Needs PyYAML and jsonschema (both come with kubernetes-validate).
"""

import ipaddress
import json
import pathlib
import sys
from urllib.parse import urlsplit

import jsonschema
import yaml

# IANA IPv4 and IPv6 special-purpose address registries: every block that is
# not globally reachable, multicast, and the forms that embed an IPv4
# address or a local scope (deprecated, but still routed by some stacks) or
# lead back into IPv4 (NAT64, 6to4, Teredo). An ipBlock open to the whole
# internet must except all of them.
SPECIAL_PURPOSE = [
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
    "172.16.0.0/12", "192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24", "192.168.0.0/16",
    "198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4",
    "255.255.255.255/32",
    "::/128", "::1/128", "::/96", "::ffff:0:0/96", "::ffff:0:0:0/96", "64:ff9b::/96",
    "64:ff9b:1::/48", "100::/64", "100:0:0:1::/64", "2001::/23", "2001::/32", "2001:2::/48",
    "2001:db8::/32", "2002::/16", "3fff::/20", "5f00::/16", "fc00::/7", "fe80::/10",
    "fec0::/10", "ff00::/8",
]

# Pods allowed to fall short of Pod Security "restricted", and in what only.
# The control-service with the embedded fail2ban (overlays/single-node)
# mounts the node's fail2ban socket, configuration and database (hostPath,
# which needs "privileged"); the fail2ban-agent mounts them and its state
# directory, and runs as UID 0 with no capability (base/fail2ban-agent
# says why).
BELOW_RESTRICTED = {
    "control-service": {"hostPath volume"},
    "fail2ban-agent": {"hostPath volume", "runAsNonRoot not true", "runAsUser 0"},
}
AGENT = "fail2ban-agent"
AGENT_LABEL = ("bangui.io/fail2ban-agent", "true")
AGENT_PORT = 50053
AGENT_METRICS_PORT = 9466
AGENT_STATE_DIR = "/var/lib/fail2ban-agent"
# The node's fail2ban: what the agent (and the embedded control-service)
# mount, read-only.
FAIL2BAN_HOST_PATHS = {"/var/run/fail2ban", "/var/lib/fail2ban", "/etc/fail2ban"}
WAIVERS = pathlib.Path(__file__).resolve().parent.parent / "deploy" / "checkov-waivers.txt"

CONTROL_API_PORT = 50052
CLIENT_LABEL = ("bangui.io/control-client", "true")

failures = []
# Progress notes on stderr (off in the selftest).
verbose = [True]


def fail(message):
    failures.append(message)


def docs(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def name_of(doc):
    return f"{doc['kind']}/{doc['metadata']['name']}"


# ---------------------------------------------------------------- crds


def load_schemas(schema_dir):
    schemas = {}
    for path in pathlib.Path(schema_dir).glob("*.json"):
        schema = json.loads(path.read_text())
        schemas[schema["properties"]["kind"]["const"]] = jsonschema.Draft202012Validator(schema)
    return schemas


def crds(schema_dir, rendered, objects=None, out=sys.stdout):
    """Validates the cert-manager objects; writes the others to `out`."""
    schemas = load_schemas(schema_dir)
    rest = []
    count = 0
    objects = docs(rendered) if objects is None else objects
    rendered = pathlib.Path(rendered).stem
    for doc in objects:
        group = doc.get("apiVersion", "").split("/")[0]
        if not group.endswith("cert-manager.io"):
            rest.append(doc)
            continue
        validator = schemas.get(doc["kind"]) if doc["apiVersion"] == "cert-manager.io/v1" else None
        if validator is None:
            fail(f"{rendered}: {doc['apiVersion']} {doc['kind']}: no vendored schema")
            continue
        error = jsonschema.exceptions.best_match(validator.iter_errors(doc))
        if error is not None:
            where = "/".join(str(p) for p in error.absolute_path)
            fail(f"{rendered}: {name_of(doc)}: {where}: {error.message}")
        count += 1
    if out is not None:
        if count:
            print(f"{rendered}: {count} cert-manager objects valid", file=sys.stderr)
        yaml.safe_dump_all(rest, out, sort_keys=False)


# ---------------------------------------------------------------- pods


def pod_templates(objects):
    """(name, pod spec, pod labels) of every workload."""
    for name, _, spec, labels, _ in workloads(objects):
        yield name, spec, labels


def workloads(objects):
    """(name, namespace, pod spec, pod labels, object) of every workload."""
    for doc in objects:
        kind = doc["kind"]
        if kind in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"):
            template = doc["spec"]["template"]
        elif kind == "CronJob":
            template = doc["spec"]["jobTemplate"]["spec"]["template"]
        elif kind == "Pod":
            template = doc
        else:
            continue
        labels = template.get("metadata", {}).get("labels", {})
        yield doc["metadata"]["name"], doc["metadata"].get("namespace"), template["spec"], labels, doc


def containers(spec):
    for key in ("initContainers", "containers", "ephemeralContainers"):
        yield from spec.get(key) or []


def selector_matches(selector, labels):
    """A LabelSelector against a label set (an empty selector matches all)."""
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        present = key in labels
        if op == "In" and not (present and labels[key] in values):
            return False
        if op == "NotIn" and present and labels[key] in values:
            return False
        if op == "Exists" and not present:
            return False
        if op == "DoesNotExist" and present:
            return False
    return True


# ---------------------------------------------------------------- Pod Security


RESTRICTED_VOLUMES = {
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret",
}


def pod_security(spec):
    """(baseline violations, restricted-only violations) of a pod spec,
    after the Pod Security Standards (the checks that apply to these
    manifests: host namespaces and ports, privileged, capabilities,
    hostPath and other volume types, privilege escalation, non-root,
    seccomp)."""
    baseline, restricted = set(), set()
    pod_sc = spec.get("securityContext") or {}
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(field):
            baseline.add(field)
    for volume in spec.get("volumes") or []:
        kind = next(k for k in volume if k != "name")
        if kind == "hostPath":
            baseline.add("hostPath volume")
        elif kind not in RESTRICTED_VOLUMES:
            restricted.add(f"{kind} volume")
    pod_seccomp = (pod_sc.get("seccompProfile") or {}).get("type")
    if pod_seccomp == "Unconfined":
        baseline.add("seccomp Unconfined")
    for c in containers(spec):
        sc = c.get("securityContext") or {}
        if sc.get("privileged"):
            baseline.add("privileged container")
        for port in c.get("ports") or []:
            if port.get("hostPort"):
                baseline.add("hostPort")
        caps = sc.get("capabilities") or {}
        added = set(caps.get("add") or [])
        if added - {"AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD",
                    "NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT"}:
            baseline.add("capabilities beyond baseline")
        if added - {"NET_BIND_SERVICE"}:
            restricted.add("capabilities added")
        if "ALL" not in (caps.get("drop") or []):
            restricted.add("capabilities not dropped (ALL)")
        if sc.get("allowPrivilegeEscalation") is not False:
            restricted.add("allowPrivilegeEscalation not false")
        if not sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")):
            restricted.add("runAsNonRoot not true")
        if sc.get("runAsUser", pod_sc.get("runAsUser")) == 0:
            restricted.add("runAsUser 0")
        seccomp = (sc.get("seccompProfile") or {}).get("type", pod_seccomp)
        if seccomp == "Unconfined":
            baseline.add("seccomp Unconfined")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            restricted.add("seccompProfile not RuntimeDefault/Localhost")
    return baseline, restricted


def check_pod_security(rendered, objects):
    levels = ["privileged", "baseline", "restricted"]
    namespaces = [d for d in objects if d["kind"] == "Namespace"]
    # Each namespace's level is its own pods' (a render without namespaces
    # on its workloads has one Namespace object for all).
    needed_in = {}
    for name, namespace, spec, _, _ in workloads(objects):
        if namespace is None and len(namespaces) == 1:
            namespace = namespaces[0]["metadata"]["name"]
        needed = needed_in.get(namespace, "restricted")
        baseline, restricted = pod_security(spec)
        if baseline:
            needed = "privileged"
        elif restricted and needed == "restricted":
            needed = "baseline"
        needed_in[namespace] = needed
        short = baseline | restricted
        if short and verbose[0]:
            print(f"{rendered}: pod {name} below restricted: {', '.join(sorted(short))}", file=sys.stderr)
        unexpected = short - BELOW_RESTRICTED.get(name, set())
        if unexpected:
            fail(f"{rendered}: pod {name} falls short of Pod Security restricted: {', '.join(sorted(unexpected))}")
    if not namespaces:
        fail(f"{rendered}: no Namespace object to carry the Pod Security labels")
    for namespace in needed_in:
        if namespace not in {ns["metadata"]["name"] for ns in namespaces}:
            fail(f"{rendered}: pods in namespace {namespace}, which has no Namespace object here")
    for ns in namespaces:
        labels = ns["metadata"].get("labels") or {}
        needed = needed_in.get(ns["metadata"]["name"], "restricted")
        want = {"enforce": needed, "warn": "restricted", "audit": "restricted"}
        for mode, level in want.items():
            have = labels.get(f"pod-security.kubernetes.io/{mode}")
            if have != level:
                fail(f"{rendered}: {name_of(ns)}: pod-security.kubernetes.io/{mode} is {have!r}, want {level!r}")
        assert needed in levels


# ---------------------------------------------------------------- NetworkPolicies


def networks(text):
    try:
        return ipaddress.ip_network(text, strict=True)
    except ValueError as e:
        return e


def check_ip_block(where, block):
    cidr = networks(block["cidr"])
    if isinstance(cidr, ValueError):
        fail(f"{where}: ipBlock cidr {block['cidr']}: {cidr}")
        return
    excepts = []
    for text in block.get("except") or []:
        net = networks(text)
        if isinstance(net, ValueError) or net.version != cidr.version:
            fail(f"{where}: except {text}: not a network of the cidr's family ({net})")
            continue
        # The API server's rule: each except strictly inside the cidr.
        if not (net.subnet_of(cidr) and net.prefixlen > cidr.prefixlen):
            fail(f"{where}: except {text} is not strictly inside {cidr}")
        excepts.append(net)
    if cidr.prefixlen == 0:
        for text in SPECIAL_PURPOSE:
            special = ipaddress.ip_network(text)
            if special.version == cidr.version and not any(special.subnet_of(e) for e in excepts):
                fail(f"{where}: {cidr} admits the special-purpose range {special}")


def policy_ports(rule):
    """The TCP ports a rule admits; None for every port."""
    ports = rule.get("ports")
    if not ports:
        return None
    return {p.get("port") for p in ports if p.get("protocol", "TCP") == "TCP"}


def check_network_policies(rendered, objects):
    pods = {name: labels for name, _, labels in pod_templates(objects)}
    policies = [d for d in objects if d["kind"] == "NetworkPolicy"]
    control_api_rules = 0
    for policy in policies:
        where = f"{rendered}: {name_of(policy)}"
        spec = policy["spec"]
        for rule in spec.get("egress") or []:
            peers = rule.get("to")
            if not peers:
                fail(f"{where}: an egress rule to every destination (ports {policy_ports(rule) or 'all'})")
            for peer in peers or []:
                if "ipBlock" in peer:
                    check_ip_block(where, peer["ipBlock"])
                    ports = policy_ports(rule)
                    cidr = networks(peer["ipBlock"]["cidr"])
                    if (ports is None or 5432 in ports) and getattr(cidr, "prefixlen", None) == 0:
                        fail(f"{where}: PostgreSQL (5432) open to {peer['ipBlock']['cidr']}")
        selects_control = (
            "control-service" in pods
            and policy["metadata"].get("namespace") == namespace_of(objects, "control-service")
            and selector_matches(spec["podSelector"], pods["control-service"])
        )
        for rule in spec.get("ingress") or []:
            for peer in rule.get("from") or []:
                if "ipBlock" in peer:
                    check_ip_block(where, peer["ipBlock"])
            ports = policy_ports(rule)
            if not selects_control or (ports is not None and CONTROL_API_PORT not in ports):
                continue
            control_api_rules += 1
            peers = rule.get("from")
            if not peers:
                fail(f"{where}: the control-service's API admits every source")
                continue
            for peer in peers:
                selector = peer.get("podSelector")
                if selector is None:
                    fail(f"{where}: the control-service's API admits a peer without a podSelector: {peer}")
                    continue
                if selector_matches(selector, {}):
                    fail(f"{where}: the control-service's API admits unlabelled pods")
                if not selector_matches(selector, dict([CLIENT_LABEL])):
                    fail(f"{where}: a labelled client ({CLIENT_LABEL[0]}) is not admitted")
                # The geo-service, even if someone gave it the client label.
                geo = dict(pods.get("geo-service", {}), **dict([CLIENT_LABEL]))
                if "geo-service" in pods and selector_matches(selector, geo):
                    fail(f"{where}: the control-service's API admits the geo-service's pods")
    if "control-service" in pods and control_api_rules == 0:
        fail(f"{rendered}: no NetworkPolicy admits the control-service's API clients")


# ---------------------------------------------------------------- TLS


def env_of(container):
    """The container's settings: env values, then --flag=value arguments
    under the environment variable's name they stand for."""
    values = {}
    for e in container.get("env") or []:
        values[e["name"]] = e["value"] if "value" in e else e.get("valueFrom")
    prefix = {"control-service": "CONTROL_", "geo-service": "GEO_"}.get(container["name"], "")
    args = list(container.get("command") or []) + list(container.get("args") or [])
    for i, arg in enumerate(args):
        if arg.startswith("--"):
            flag, eq, value = arg[2:].partition("=")
            if not eq:
                value = args[i + 1] if i + 1 < len(args) else ""
            values[prefix + flag.upper().replace("-", "_")] = value
    return values


def mounted_secret_file(spec, container, path, certificates, where, what):
    """The Certificate whose Secret holds `path`, or None (and a failure)."""
    volumes = {v["name"]: v for v in spec.get("volumes") or []}
    for mount in container.get("volumeMounts") or []:
        root = mount["mountPath"].rstrip("/") + "/"
        if not path.startswith(root):
            continue
        secret = (volumes.get(mount["name"]) or {}).get("secret")
        if secret is None:
            fail(f"{where}: {what} {path} is not in a Secret volume")
            return None
        key = path[len(root):]
        if key not in ("tls.crt", "tls.key", "ca.crt"):
            fail(f"{where}: {what} {path}: a cert-manager Secret has no key {key}")
        cert = certificates.get(secret["secretName"])
        if cert is None:
            fail(f"{where}: {what} {path}: Secret {secret['secretName']} is issued by no Certificate here")
        return cert
    fail(f"{where}: {what} {path} is on no mounted volume")
    return None


def check_tls(rendered, objects):
    certificates = {d["spec"]["secretName"]: d for d in objects if d["kind"] == "Certificate"}
    issuers = {d["metadata"]["name"]: d for d in objects if d["kind"] == "Issuer"}
    for cert in certificates.values():
        ref = cert["spec"]["issuerRef"]
        if ref.get("kind", "Issuer") == "Issuer":
            issuer = issuers.get(ref["name"])
            if issuer is None:
                fail(f"{rendered}: {name_of(cert)}: issuer {ref['name']} is not rendered")
            elif "ca" in issuer["spec"]:
                ca = certificates.get(issuer["spec"]["ca"].get("secretName"))
                if ca is None or not ca["spec"].get("isCA"):
                    fail(f"{rendered}: Issuer/{ref['name']}: its CA Secret comes from no isCA Certificate")
    deployments = {d["metadata"]["name"]: d for d in objects if d["kind"] == "Deployment"}
    services = {d["metadata"]["name"] for d in objects if d["kind"] == "Service"}
    serving = {}
    for name, prefix in (("geo-service", "GEO_"), ("control-service", "CONTROL_")):
        deployment = deployments.get(name)
        if deployment is None:
            fail(f"{rendered}: no Deployment {name}")
            continue
        spec = deployment["spec"]["template"]["spec"]
        container = next(c for c in spec["containers"] if c["name"] == name)
        env = env_of(container)
        where = f"{rendered}: Deployment/{name}"
        if not env.get(prefix + "TLS_CERT") or not env.get(prefix + "TLS_KEY"):
            fail(f"{where}: no --tls-cert/--tls-key ({prefix}TLS_CERT/KEY): its gRPC port is plaintext")
            continue
        cert = mounted_secret_file(spec, container, env[prefix + "TLS_CERT"], certificates, where, "--tls-cert")
        mounted_secret_file(spec, container, env[prefix + "TLS_KEY"], certificates, where, "--tls-key")
        serving[name] = (cert, env, spec, container)
        # The kubelet's probes keep a plaintext port of their own.
        health = str(env.get(prefix + "HEALTH_LISTEN") or "")
        port = health.rpartition(":")[2]
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            grpc = (container.get(probe) or {}).get("grpc")
            if grpc is None or str(grpc["port"]) != port:
                fail(f"{where}: {probe} is not a gRPC probe on the health port ({health or 'unset'})")
        if str(env.get(prefix + "ALLOW_UNAUTHENTICATED", "false")).lower() == "true":
            fail(f"{where}: serves without the bearer token")
        # The control-service's own Service names must be in its certificate.
        if cert is not None and name in services and name not in cert["spec"].get("dnsNames", []):
            fail(f"{where}: its certificate does not name the Service {name}")
    if "control-service" not in serving:
        return
    _, env, spec, container = serving["control-service"]
    where = f"{rendered}: Deployment/control-service"
    endpoint = env.get("CONTROL_GEO_ENDPOINT")
    if not isinstance(endpoint, str) or not endpoint:
        fail(f"{where}: the geo endpoint is not a literal URL ({endpoint!r}): cannot check it is https://")
        return
    geo_cert = serving.get("geo-service", (None,))[0]
    for url in endpoint.split(","):
        parts = urlsplit(url.strip())
        if parts.scheme != "https":
            fail(f"{where}: geo endpoint {url.strip()} is not https://: plaintext gRPC between the services")
        elif geo_cert is not None and parts.hostname not in geo_cert["spec"].get("dnsNames", []):
            fail(f"{where}: geo endpoint host {parts.hostname} is not in the geo-service's certificate")
    if not env.get("CONTROL_GEO_TLS_CA"):
        fail(f"{where}: no --geo-tls-ca (CONTROL_GEO_TLS_CA)")
    else:
        mounted_secret_file(spec, container, env["CONTROL_GEO_TLS_CA"], certificates, where, "--geo-tls-ca")
    geo_env = serving.get("geo-service", (None, {}))[1]
    if geo_env.get("GEO_TLS_CLIENT_CA") and not env.get("CONTROL_GEO_TLS_CERT"):
        fail(f"{where}: the geo-service wants a client certificate and the control-service has none")
    for key in ("CONTROL_GEO_TLS_CERT", "CONTROL_GEO_TLS_KEY"):
        if env.get(key):
            mounted_secret_file(spec, container, env[key], certificates, where, key)


# ---------------------------------------------------------------- the fleet


def namespace_of(objects, workload):
    for name, namespace, _, _, _ in workloads(objects):
        if name == workload:
            return namespace
    return None


def peer_names_namespace(peer):
    """The namespace a peer's namespaceSelector names by
    kubernetes.io/metadata.name (set by the API server, so it cannot be
    borrowed), or None."""
    selector = peer.get("namespaceSelector")
    if selector is None or selector.get("matchExpressions"):
        return None
    return (selector.get("matchLabels") or {}).get("kubernetes.io/metadata.name")


def check_agent_policies(rendered, objects):
    """The agent port admits only agent pods of the agents' namespace (or
    addresses); nothing reaches an agent but the metrics scrape."""
    agents = [(name, ns, labels) for name, ns, _, labels, _ in workloads(objects) if name == AGENT]
    agent_namespaces = {ns for _, ns, _ in agents}
    control_ns = namespace_of(objects, "control-service")
    policies = [d for d in objects if d["kind"] == "NetworkPolicy"]
    admitted = False
    for policy in policies:
        where = f"{rendered}: {name_of(policy)}"
        spec = policy["spec"]
        namespace = policy["metadata"].get("namespace")
        control = next((labels for name, _, _, labels, _ in workloads(objects) if name == "control-service"), None)
        if control is not None and namespace == control_ns and selector_matches(spec["podSelector"], control):
            for rule in spec.get("ingress") or []:
                ports = policy_ports(rule)
                if ports is not None and AGENT_PORT not in ports:
                    continue
                if not rule.get("from"):
                    fail(f"{where}: the agent port admits every source")
                    continue
                for peer in rule["from"]:
                    if "ipBlock" in peer:
                        if getattr(networks(peer["ipBlock"]["cidr"]), "prefixlen", None) == 0:
                            fail(f"{where}: the agent port is open to {peer['ipBlock']['cidr']}")
                        continue
                    selector = peer.get("podSelector")
                    if selector is None or selector_matches(selector, {}):
                        fail(f"{where}: the agent port admits pods without the agent label")
                    elif not selector_matches(selector, dict([AGENT_LABEL])):
                        fail(f"{where}: the agent port does not admit pods labelled {AGENT_LABEL[0]}")
                    named = peer_names_namespace(peer)
                    if named is None:
                        fail(f"{where}: the agent port admits agent-labelled pods of any namespace "
                             "(name the agents' namespace by kubernetes.io/metadata.name)")
                    elif agent_namespaces and named not in agent_namespaces:
                        fail(f"{where}: the agent port admits namespace {named}, the agents run in "
                             f"{', '.join(sorted(map(str, agent_namespaces)))}")
                    else:
                        admitted = True
    if agents and control_ns is not None and not admitted:
        fail(f"{rendered}: no NetworkPolicy admits the agents to the control-service's agent port")
    for name, namespace, labels in agents:
        mine = [p for p in policies
                if p["metadata"].get("namespace") == namespace and selector_matches(p["spec"]["podSelector"], labels)]
        denies = [p for p in mine
                  if {"Ingress", "Egress"} <= set(p["spec"].get("policyTypes") or [])
                  and not p["spec"].get("ingress") and not p["spec"].get("egress")
                  and p["spec"]["podSelector"] == {}]
        if not denies:
            fail(f"{rendered}: namespace {namespace}: no default-deny policy (every pod, ingress and egress)")
        for policy in mine:
            where = f"{rendered}: {name_of(policy)}"
            for rule in policy["spec"].get("ingress") or []:
                if policy_ports(rule) != {AGENT_METRICS_PORT}:
                    fail(f"{where}: lets into the agent more than its metrics port {AGENT_METRICS_PORT}")
                if not rule.get("from"):
                    fail(f"{where}: lets every source into the agent")
                for peer in rule.get("from") or []:
                    if "ipBlock" in peer or peer_names_namespace(peer) is None:
                        fail(f"{where}: lets into the agent more than a named namespace (the monitoring one)")


def env_value(objects, namespace, value):
    """An env entry's value, a configMapKeyRef resolved in the render."""
    if isinstance(value, dict) and "configMapKeyRef" in value:
        ref = value["configMapKeyRef"]
        for doc in objects:
            if (doc["kind"] == "ConfigMap" and doc["metadata"]["name"] == ref["name"]
                    and doc["metadata"].get("namespace") == namespace):
                return (doc.get("data") or {}).get(ref["key"])
        return None
    return value


def check_agent(rendered, objects, require_tls):
    certificates = {d["spec"]["secretName"]: d for d in objects if d["kind"] == "Certificate"}
    control_names = set((certificates.get("control-service-tls") or {}).get("spec", {}).get("dnsNames", []))
    for name, namespace, spec, _, doc in workloads(objects):
        if name != AGENT:
            continue
        where = f"{rendered}: {name_of(doc)}"
        if doc["kind"] != "DaemonSet":
            fail(f"{where}: the agent is a DaemonSet (one per labelled node)")
            continue
        rolling = (doc["spec"].get("updateStrategy") or {}).get("rollingUpdate") or {}
        if str(rolling.get("maxSurge", 0)) not in ("0", "0%"):
            fail(f"{where}: maxSurge {rolling['maxSurge']}: two agents of one node would share its state")
        container = next(c for c in spec["containers"] if c["name"] == AGENT)
        sc = container.get("securityContext") or {}
        caps = sc.get("capabilities") or {}
        if caps.get("add") or "ALL" not in (caps.get("drop") or []):
            fail(f"{where}: capabilities must all be dropped and none added")
        if sc.get("readOnlyRootFilesystem") is not True or sc.get("allowPrivilegeEscalation") is not False:
            fail(f"{where}: wants readOnlyRootFilesystem and no privilege escalation")
        env = env_of(container)
        volumes = {v["name"]: v for v in spec.get("volumes") or []}
        state = False
        for mount in container.get("volumeMounts") or []:
            host = (volumes.get(mount["name"]) or {}).get("hostPath")
            if host is None:
                continue
            path = host["path"].rstrip("/")
            if path in FAIL2BAN_HOST_PATHS:
                if not mount.get("readOnly"):
                    fail(f"{where}: the node's {path} is mounted writable")
            elif path == AGENT_STATE_DIR and mount["mountPath"] == env.get("FAIL2BAN_AGENT_STATE_DIR"):
                state = True
            else:
                fail(f"{where}: mounts the node's {path}, which the agent has no use for")
        if not state:
            fail(f"{where}: FAIL2BAN_AGENT_STATE_DIR is not the node's {AGENT_STATE_DIR}: a new pod would be a new host")
        host_name = env.get("FAIL2BAN_AGENT_HOST_NAME")
        if not (isinstance(host_name, dict) and host_name.get("fieldRef", {}).get("fieldPath") == "spec.nodeName"):
            fail(f"{where}: FAIL2BAN_AGENT_HOST_NAME is not the node's name (spec.nodeName)")
        endpoint = env_value(objects, namespace, env.get("FAIL2BAN_AGENT_CONTROL_ENDPOINT"))
        if not isinstance(endpoint, str) or not endpoint:
            fail(f"{where}: the control endpoint is not set in the render ({endpoint!r})")
            continue
        if not (require_tls or certificates):
            continue
        for url in endpoint.split(","):
            parts = urlsplit(url.strip())
            if parts.scheme != "https":
                fail(f"{where}: control endpoint {url.strip()} is not https://: the credential would cross in cleartext")
            elif control_names and parts.hostname not in control_names:
                fail(f"{where}: control endpoint host {parts.hostname} is not in the control-service's certificate")
        ca = env.get("FAIL2BAN_AGENT_TLS_CA")
        if not ca:
            fail(f"{where}: no FAIL2BAN_AGENT_TLS_CA")
        elif not any(str(ca).startswith(m["mountPath"].rstrip("/") + "/")
                     and ("configMap" in volumes.get(m["name"], {}) or "secret" in volumes.get(m["name"], {}))
                     for m in container.get("volumeMounts") or []):
            fail(f"{where}: FAIL2BAN_AGENT_TLS_CA {ca} is on no ConfigMap or Secret volume")


def check_embedded(rendered, objects):
    """A control-service mounts the node's fail2ban exactly when it serves
    it as the host `local`."""
    for name, _, spec, _, doc in workloads(objects):
        if name != "control-service":
            continue
        container = next(c for c in spec["containers"] if c["name"] == name)
        local = str(env_of(container).get("CONTROL_LOCAL_FAIL2BAN", "true")).lower() == "true"
        volumes = {v["name"]: v for v in spec.get("volumes") or []}
        mounted = {volumes[m["name"]]["hostPath"]["path"].rstrip("/")
                   for m in container.get("volumeMounts") or [] if "hostPath" in volumes.get(m["name"], {})}
        where = f"{rendered}: {name_of(doc)}"
        if local and "/var/run/fail2ban" not in mounted:
            fail(f"{where}: serves the host `local` (CONTROL_LOCAL_FAIL2BAN) without the node's fail2ban socket")
        if not local and any("hostPath" in v for v in volumes.values()):
            fail(f"{where}: mounts the node (hostPath) though it serves no host `local`")


def check_fleet(rendered, objects):
    """overlays/ha: the control plane runs anywhere, the agents apart."""
    control_ns = namespace_of(objects, "control-service")
    agent_ns = namespace_of(objects, AGENT)
    if agent_ns is None:
        fail(f"{rendered}: no fail2ban-agent")
    elif agent_ns == control_ns:
        fail(f"{rendered}: the agents share the control plane's namespace {control_ns}")
    for ns in (d for d in objects if d["kind"] == "Namespace" and d["metadata"]["name"] == control_ns):
        level = (ns["metadata"].get("labels") or {}).get("pod-security.kubernetes.io/enforce")
        if level != "restricted":
            fail(f"{rendered}: the control plane's namespace {control_ns} enforces {level!r}, not 'restricted'")
    for name, _, spec, _, doc in workloads(objects):
        if name == "control-service":
            container = next(c for c in spec["containers"] if c["name"] == name)
            if str(env_of(container).get("CONTROL_LOCAL_FAIL2BAN", "true")).lower() != "false":
                fail(f"{rendered}: {name_of(doc)} serves a host `local`: set CONTROL_LOCAL_FAIL2BAN=false")
            if spec.get("nodeSelector"):
                fail(f"{rendered}: {name_of(doc)} is pinned to nodes ({spec['nodeSelector']})")


def object_waivers():
    """{(Kind/name, CKV_ID)} from deploy/checkov-waivers.txt."""
    waived = set()
    for line in WAIVERS.read_text().splitlines():
        words = line.split(None, 2)
        if len(words) == 3 and not line.startswith("#") and "/" in words[0]:
            waived.add((words[0], words[1]))
    return waived


def check_waivers(rendered, objects):
    waived = object_waivers()
    for doc in objects:
        for key, value in (doc["metadata"].get("annotations") or {}).items():
            if not key.startswith("checkov.io/skip"):
                continue
            check, _, reason = str(value).partition("=")
            where = f"{rendered}: {name_of(doc)}: {key}"
            if not reason.strip():
                fail(f"{where}: {check} waived without a reason")
            if (name_of(doc), check) not in waived:
                fail(f"{where}: {check} is not listed in deploy/checkov-waivers.txt for {name_of(doc)}")


def checks(rendered, require_tls, objects=None, fleet=False):
    objects = docs(rendered) if objects is None else objects
    rendered = pathlib.Path(rendered).stem
    check_network_policies(rendered, objects)
    check_agent_policies(rendered, objects)
    check_pod_security(rendered, objects)
    check_embedded(rendered, objects)
    check_agent(rendered, objects, require_tls)
    check_waivers(rendered, objects)
    if fleet:
        check_fleet(rendered, objects)
    if require_tls or any(d["kind"] == "Certificate" for d in objects):
        check_tls(rendered, objects)


# ---------------------------------------------------------------- selftest


def find(objects, kind, name):
    return next(d for d in objects if d["kind"] == kind and d["metadata"]["name"] == name)


def container_of(objects, name):
    spec = find(objects, "Deployment", name)["spec"]["template"]["spec"]
    return next(c for c in spec["containers"] if c["name"] == name)


def set_env(objects, name, key, value):
    set_env_in(container_of(objects, name), key, value)


def set_env_in(container, key, value):
    env = container["env"]
    env[:] = [e for e in env if e["name"] != key] + ([{"name": key, "value": value}] if value is not None else [])


def api_peer(objects):
    return find(objects, "NetworkPolicy", "control-service-allow-api-ingress")["spec"]["ingress"][0]["from"][0]


def internet_except(objects, name):
    return find(objects, "NetworkPolicy", name)["spec"]["egress"][0]["to"][1]["ipBlock"]["except"]


def postgres_rule(objects):
    return find(objects, "NetworkPolicy", "control-service-allow-postgres-egress")["spec"]["egress"][0]


def agent_spec(objects):
    return find(objects, "DaemonSet", AGENT)["spec"]["template"]["spec"]


def agent_container(objects):
    return next(c for c in agent_spec(objects)["containers"] if c["name"] == AGENT)


def agent_port_peer(objects):
    return find(objects, "NetworkPolicy", "control-service-allow-ingress-from-agents")["spec"]["ingress"][0]["from"][0]


def agent_mount(objects, name):
    return next(m for m in agent_container(objects)["volumeMounts"] if m["name"] == name)


def agent_config(objects):
    return next(d for d in objects if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith(AGENT))


def remove(objects, kind, name):
    objects.remove(find(objects, kind, name))


def control_volumes(objects):
    return find(objects, "Deployment", "control-service")["spec"]["template"]["spec"]["volumes"]


# Each breaks the ha render in one way that a check must refuse.
MUTATIONS = {
    "agent port from any namespace": lambda o: agent_port_peer(o).update(namespaceSelector={}),
    "agent port from another namespace": lambda o: agent_port_peer(o).update(
        namespaceSelector={"matchLabels": {"kubernetes.io/metadata.name": "default"}}),
    "agent port without the agent label": lambda o: agent_port_peer(o).update(podSelector={}),
    "agent port open to the internet": lambda o: agent_port_peer(o).clear() or agent_port_peer(o).update(
        ipBlock={"cidr": "0.0.0.0/0"}),
    "agents without a default deny": lambda o: remove(o, "NetworkPolicy", "fail2ban-agent-default-deny"),
    "agents open to every source": lambda o: find(o, "NetworkPolicy", "fail2ban-agent-allow-metrics-from-monitoring")[
        "spec"]["ingress"][0].pop("from"),
    "agents open on another port": lambda o: find(o, "NetworkPolicy", "fail2ban-agent-allow-metrics-from-monitoring")[
        "spec"]["ingress"][0].pop("ports"),
    "agent's socket mount writable": lambda o: agent_mount(o, "fail2ban-run").update(readOnly=False),
    "agent's database mount writable": lambda o: agent_mount(o, "fail2ban-db").pop("readOnly"),
    "agent with a capability": lambda o: agent_container(o)["securityContext"]["capabilities"].update(add=["NET_ADMIN"]),
    "agent's root filesystem writable": lambda o: agent_container(o)["securityContext"].update(
        readOnlyRootFilesystem=False),
    "agent's state in the pod": lambda o: agent_spec(o)["volumes"].__setitem__(
        [v["name"] for v in agent_spec(o)["volumes"]].index("state"), {"name": "state", "emptyDir": {}}),
    "agent mounts the node's /run": lambda o: agent_spec(o)["volumes"][
        [v["name"] for v in agent_spec(o)["volumes"]].index("fail2ban-run")]["hostPath"].update(path="/run"),
    "agent surges": lambda o: find(o, "DaemonSet", AGENT)["spec"]["updateStrategy"]["rollingUpdate"].update(maxSurge=1),
    "agent named by the pod": lambda o: set_env_in(agent_container(o), "FAIL2BAN_AGENT_HOST_NAME", "agent"),
    "agent endpoint http://": lambda o: agent_config(o)["data"].update(
        {"control-endpoint": "http://control-service.bangui.svc:50053"}),
    "agent endpoint not in the certificate": lambda o: agent_config(o)["data"].update(
        {"control-endpoint": "https://control-service.elsewhere:50053"}),
    "agent without the CA": lambda o: set_env_in(agent_container(o), "FAIL2BAN_AGENT_TLS_CA", None),
    "agents in the control plane's namespace": lambda o: find(o, "DaemonSet", AGENT)["metadata"].update(
        namespace="bangui"),
    "agents' namespace enforces restricted": lambda o: find(o, "Namespace", "bangui-agents")["metadata"][
        "labels"].update({"pod-security.kubernetes.io/enforce": "restricted"}),
    "control plane enforces privileged": lambda o: find(o, "Namespace", "bangui")["metadata"]["labels"].update(
        {"pod-security.kubernetes.io/enforce": "privileged"}),
    "control-service serves local": lambda o: set_env(o, "control-service", "CONTROL_LOCAL_FAIL2BAN", "true"),
    "control-service mounts the node": lambda o: control_volumes(o).append(
        {"name": "host", "hostPath": {"path": "/var/run/fail2ban"}}),
    "control-service pinned to a node": lambda o: find(o, "Deployment", "control-service")["spec"]["template"][
        "spec"].update(nodeSelector={"bangui.io/fail2ban": "true"}),
    "waiver not listed": lambda o: find(o, "DaemonSet", AGENT)["metadata"]["annotations"].update(
        {"checkov.io/skip9": "CKV_K8S_8=probes"}),
    "waiver without a reason": lambda o: find(o, "DaemonSet", AGENT)["metadata"]["annotations"].update(
        {"checkov.io/skip1": "CKV_K8S_23"}),
    "geo endpoint http://": lambda o: set_env(o, "control-service", "CONTROL_GEO_ENDPOINT",
                                              "http://geo-service-headless:50051"),
    "geo endpoint as --geo-endpoint http://": lambda o: container_of(o, "control-service").update(
        args=["--geo-endpoint", "http://geo-service-headless:50051"]),
    "geo-service without --tls-cert": lambda o: set_env(o, "geo-service", "GEO_TLS_CERT", None),
    "control-service without --tls-key": lambda o: set_env(o, "control-service", "CONTROL_TLS_KEY", None),
    "no --geo-tls-ca": lambda o: set_env(o, "control-service", "CONTROL_GEO_TLS_CA", None),
    "geo endpoint host not in the certificate": lambda o: set_env(
        o, "control-service", "CONTROL_GEO_ENDPOINT", "https://geo-service-elsewhere:50051"),
    "TLS file outside the Secret": lambda o: set_env(o, "geo-service", "GEO_TLS_KEY", "/tmp/tls.key"),
    "probe off the health port": lambda o: container_of(o, "geo-service")["readinessProbe"]["grpc"].update(
        port=50051),
    "API open to every pod": lambda o: api_peer(o).update(podSelector={}),
    "API open to the geo-service": lambda o: api_peer(o)["podSelector"].pop("matchExpressions"),
    "API open to another namespace": lambda o: api_peer(o).update(namespaceSelector={}, podSelector=None),
    "PostgreSQL to every destination": lambda o: postgres_rule(o).pop("to"),
    "PostgreSQL to 0.0.0.0/0": lambda o: postgres_rule(o).update(to=[{"ipBlock": {"cidr": "0.0.0.0/0"}}]),
    "NAT64 let out": lambda o: internet_except(o, "geoipupdate-allow-egress").remove("64:ff9b::/96"),
    "except outside its cidr": lambda o: find(o, "NetworkPolicy", "geoipupdate-allow-egress")["spec"]["egress"][0][
        "to"][0]["ipBlock"].update(cidr="8.0.0.0/7"),
    "enforce baseline": lambda o: find(o, "Namespace", "bangui")["metadata"]["labels"].update(
        {"pod-security.kubernetes.io/enforce": "baseline"}),
    "warn privileged": lambda o: find(o, "Namespace", "bangui")["metadata"]["labels"].update(
        {"pod-security.kubernetes.io/warn": "privileged"}),
    "geo-service privileged": lambda o: container_of(o, "geo-service")["securityContext"].update(privileged=True),
    "geo-service hostPath": lambda o: find(o, "Deployment", "geo-service")["spec"]["template"]["spec"][
        "volumes"].append({"name": "host", "hostPath": {"path": "/"}}),
    "Certificate field misspelt": lambda o: find(o, "Certificate", "geo-service-tls")["spec"].update(
        dnsName=["x"]),
    "Certificate usage unknown": lambda o: find(o, "Certificate", "geo-service-tls")["spec"].update(
        usages=["server"]),
    "CA Issuer without its Secret": lambda o: find(o, "Issuer", "bangui-ca")["spec"].update(ca={}),
}


def selftest(schema_dir, rendered):
    import copy

    verbose[0] = False
    original = docs(rendered)
    crds(schema_dir, rendered, original, out=None)
    checks(rendered, True, original, fleet=True)
    if failures:
        return
    for label, mutate in MUTATIONS.items():
        objects = copy.deepcopy(original)
        mutate(objects)
        crds(schema_dir, label, objects, out=None)
        checks(label, True, objects, fleet=True)
        if failures:
            failures.clear()
        else:
            fail(f"selftest: the checks let through: {label}")
    if not failures:
        print(f"{pathlib.Path(rendered).stem}: {len(MUTATIONS)} broken copies, each refused", file=sys.stderr)


def main(argv):
    if len(argv) == 3 and argv[0] == "crds":
        crds(argv[1], argv[2])
    elif 2 <= len(argv) <= 4 and argv[0] == "checks" and set(argv[2:]) <= {"--require-tls", "--fleet"}:
        checks(argv[1], "--require-tls" in argv[2:], fleet="--fleet" in argv[2:])
    elif len(argv) == 3 and argv[0] == "selftest":
        selftest(argv[1], argv[2])
    else:
        sys.exit(__doc__)
    for message in dict.fromkeys(failures):
        print(message, file=sys.stderr)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main(sys.argv[1:])
