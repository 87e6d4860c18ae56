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
  validate-deploy.py checks RENDERED [--require-tls]
      NetworkPolicies: an ipBlock open to the whole internet excepts every
      special-purpose range; no egress rule to every destination; the
      control-service's API admits only its labelled clients, never the
      geo-service. Pod Security Admission: the namespace enforces the
      strictest level its pods allow, warns and audits at restricted, and
      only the pods listed below fall short of restricted, for the reasons
      listed. TLS (with --require-tls, or wherever a Certificate is
      rendered): no plaintext gRPC between the services.

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
# The control-service mounts the host's fail2ban socket, configuration and
# database (hostPath, which needs "privileged"); the fleet issue moves that
# part into a namespace of its own.
BELOW_RESTRICTED = {"control-service": {"hostPath volume"}}

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
        yield doc["metadata"]["name"], template["spec"], template.get("metadata", {}).get("labels", {})


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
    needed = "restricted"
    for name, spec, _ in pod_templates(objects):
        baseline, restricted = pod_security(spec)
        if baseline:
            needed = "privileged"
        elif restricted and needed == "restricted":
            needed = "baseline"
        short = baseline | restricted
        if short and verbose[0]:
            print(f"{rendered}: pod {name} below restricted: {', '.join(sorted(short))}", file=sys.stderr)
        unexpected = short - BELOW_RESTRICTED.get(name, set())
        if unexpected:
            fail(f"{rendered}: pod {name} falls short of Pod Security restricted: {', '.join(sorted(unexpected))}")
    namespaces = [d for d in objects if d["kind"] == "Namespace"]
    if not namespaces:
        fail(f"{rendered}: no Namespace object to carry the Pod Security labels")
    for ns in namespaces:
        labels = ns["metadata"].get("labels") or {}
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
        selects_control = "control-service" in pods and selector_matches(spec["podSelector"], pods["control-service"])
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


def checks(rendered, require_tls, objects=None):
    objects = docs(rendered) if objects is None else objects
    rendered = pathlib.Path(rendered).stem
    check_network_policies(rendered, objects)
    check_pod_security(rendered, objects)
    if require_tls or any(d["kind"] == "Certificate" for d in objects):
        check_tls(rendered, objects)


# ---------------------------------------------------------------- selftest


def find(objects, kind, name):
    return next(d for d in objects if d["kind"] == kind and d["metadata"]["name"] == name)


def container_of(objects, name):
    spec = find(objects, "Deployment", name)["spec"]["template"]["spec"]
    return next(c for c in spec["containers"] if c["name"] == name)


def set_env(objects, name, key, value):
    env = container_of(objects, name)["env"]
    env[:] = [e for e in env if e["name"] != key] + ([{"name": key, "value": value}] if value is not None else [])


def api_peer(objects):
    return find(objects, "NetworkPolicy", "control-service-allow-api-ingress")["spec"]["ingress"][0]["from"][0]


def internet_except(objects, name):
    return find(objects, "NetworkPolicy", name)["spec"]["egress"][0]["to"][1]["ipBlock"]["except"]


def postgres_rule(objects):
    return find(objects, "NetworkPolicy", "control-service-allow-postgres-egress")["spec"]["egress"][0]


# Each breaks the ha render in one way that a check must refuse.
MUTATIONS = {
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
    checks(rendered, True, original)
    if failures:
        return
    for label, mutate in MUTATIONS.items():
        objects = copy.deepcopy(original)
        mutate(objects)
        crds(schema_dir, label, objects, out=None)
        checks(label, True, objects)
        if failures:
            failures.clear()
        else:
            fail(f"selftest: the checks let through: {label}")
    if not failures:
        print(f"{pathlib.Path(rendered).stem}: {len(MUTATIONS)} broken copies, each refused", file=sys.stderr)


def main(argv):
    if len(argv) == 3 and argv[0] == "crds":
        crds(argv[1], argv[2])
    elif 2 <= len(argv) <= 3 and argv[0] == "checks" and argv[2:] in ([], ["--require-tls"]):
        checks(argv[1], argv[2:] == ["--require-tls"])
    elif len(argv) == 3 and argv[0] == "selftest":
        selftest(argv[1], argv[2])
    else:
        sys.exit(__doc__)
    for message in dict.fromkeys(failures):
        print(message, file=sys.stderr)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main(sys.argv[1:])
