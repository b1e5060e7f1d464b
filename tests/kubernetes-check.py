#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Checks contrib/kubernetes without a cluster; prints TAP.

  kubernetes-check.py SRCDIR OUTDIR

Each document parses (python3-yaml) and matches the Kubernetes API schema
that python3-kubernetes's models carry: every field known there, of the
right type, required fields present.  Then what the manifests promise about
tierd: the capabilities equal the unit's (contrib/systemd/tierd.service.in),
the socket directory and checkpoints are hostPath volumes, hugepages are
requested, liveness goes through the socket the ConfigMap configures, the
scrape annotations name the port the ConfigMap's [metrics] listen uses, the
inference pod mounts the same socket directory and runs as a uid the model
admits.  Writes the ConfigMap's tierd.conf to OUTDIR/tierd.conf for
`tierd -t` (tests/kubernetes.sh).
"""
import configparser
import datetime
import os
import re
import sys

import yaml

n = 0
failed = 0


def result(good, what, why=""):
    global n, failed
    n += 1
    if not good:
        failed += 1
    print("%s %d - %s%s" % ("ok" if good else "not ok", n, what, "" if good else " (%s)" % why))


try:
    import kubernetes.client as kc
except ImportError:
    kc = None

PRIMITIVE = {"str": str, "int": int, "bool": bool, "float": (int, float), "object": object,
             "datetime": (str, datetime.datetime), "date": (str, datetime.date)}


def schema_errors(value, typ, path):
    """Errors of value against the python3-kubernetes model type name typ."""
    m = re.match(r"list\[(.*)\]$", typ)
    if m:
        if not isinstance(value, list):
            return ["%s: expected a list" % path]
        return [e for i, v in enumerate(value) for e in schema_errors(v, m.group(1), "%s[%d]" % (path, i))]
    m = re.match(r"dict\(str, (.*)\)$", typ)
    if m:
        if not isinstance(value, dict):
            return ["%s: expected a map" % path]
        return [e for k, v in value.items() for e in schema_errors(v, m.group(1), "%s.%s" % (path, k))]
    if typ in PRIMITIVE:
        if typ == "str" and isinstance(value, (int, float)) and not isinstance(value, bool):
            return []      # IntOrString and quantities
        ok = isinstance(value, PRIMITIVE[typ]) and not (typ in ("int", "float") and isinstance(value, bool))
        return [] if ok else ["%s: expected %s, got %r" % (path, typ, value)]
    cls = getattr(kc, typ, None)
    if cls is None:
        return ["%s: unknown model %s" % (path, typ)]
    if not isinstance(value, dict):
        return ["%s: expected a %s object" % (path, typ)]
    by_json = {j: p for p, j in cls.attribute_map.items()}
    errs = []
    for k, v in value.items():
        if k not in by_json:
            errs.append("%s.%s: no such field in %s" % (path, k, typ))
            continue
        errs += schema_errors(v, cls.openapi_types[by_json[k]], "%s.%s" % (path, k))
    # Required fields: the model's constructor refuses None for them.
    try:
        kwargs = {by_json[k]: True for k in value if k in by_json}
        cls(local_vars_configuration=kc.Configuration(), **kwargs)
    except ValueError as e:
        errs.append("%s: %s" % (path, e))
    except TypeError:
        pass
    return errs


MODEL = {("v1", "Namespace"): "V1Namespace", ("v1", "ConfigMap"): "V1ConfigMap",
         ("apps/v1", "DaemonSet"): "V1DaemonSet", ("v1", "Pod"): "V1Pod"}


def main():
    src, out = sys.argv[1], sys.argv[2]
    kdir = os.path.join(src, "contrib", "kubernetes")
    docs = []
    for name in sorted(os.listdir(kdir)):
        if not name.endswith(".yaml"):
            continue
        try:
            with open(os.path.join(kdir, name)) as f:
                got = [d for d in yaml.safe_load_all(f) if d is not None]
            result(bool(got), "%s parses (%d documents)" % (name, len(got)))
            docs += [(name, d) for d in got]
        except yaml.YAMLError as e:
            result(False, "%s parses" % name, str(e).replace("\n", " "))
    if kc is None:
        print("ok %d # SKIP python3-kubernetes not installed: no schema check" % (n + 1))
        globals()["n"] += 1
    else:
        errs = []
        for name, d in docs:
            model = MODEL.get((d.get("apiVersion"), d.get("kind")))
            if model is None:
                errs.append("%s: unexpected %s %s" % (name, d.get("apiVersion"), d.get("kind")))
                continue
            errs += ["%s: %s" % (name, e) for e in schema_errors(d, model, d["kind"])]
        result(not errs, "every document matches the Kubernetes API schema (python3-kubernetes models)",
               "; ".join(errs))

    def one(kind):
        found = [d for _, d in docs if d.get("kind") == kind]
        return found[0] if found else {}

    ds, cm, pod = one("DaemonSet"), one("ConfigMap"), one("Pod")
    conf_text = cm.get("data", {}).get("tierd.conf", "")
    with open(os.path.join(out, "tierd.conf"), "w") as f:
        f.write(conf_text)
    conf = configparser.ConfigParser(inline_comment_prefixes=None, strict=False)
    conf.read_string(conf_text)
    sock = conf.get("daemon", "socket", fallback="/run/tierd/tierd.sock")
    sockdir = os.path.dirname(sock)
    listen = conf.get("metrics", "listen", fallback="")
    pspec = ds.get("spec", {}).get("template", {}).get("spec", {})
    c = (pspec.get("containers") or [{}])[0]
    vols = {v["name"]: v for v in pspec.get("volumes", [])}
    mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}

    with open(os.path.join(src, "contrib", "systemd", "tierd.service.in")) as f:
        unit = f.read()
    unit_caps = set(re.search(r"^AmbientCapabilities=(.*)$", unit, re.M).group(1).split())
    unit_caps = {x.replace("CAP_", "") for x in unit_caps}
    caps = c.get("securityContext", {}).get("capabilities", {})
    result(set(caps.get("add", [])) == unit_caps and caps.get("drop") == ["ALL"]
           and not c.get("securityContext", {}).get("privileged", False),
           "capabilities: ALL dropped, added exactly the unit's %s" % sorted(unit_caps),
           "added %s" % caps.get("add"))

    def host(mount_path):
        v = vols.get(mounts.get(mount_path, ""), {})
        return v.get("hostPath", {}).get("path")
    models = [conf.get(s, "path") for s in conf.sections() if s.startswith("model ")]
    model_mount = next((m for m in mounts if models and models[0].startswith(m.rstrip("/") + "/")), None)
    result(host(sockdir) is not None and model_mount is not None and host(model_mount) is not None,
           "socket directory %s and checkpoints (%s) on hostPath volumes" % (sockdir, model_mount),
           "socket dir hostPath %s, checkpoint mount %s" % (host(sockdir), model_mount))
    res = c.get("resources", {})
    hp = [k for k in res.get("limits", {}) if k.startswith("hugepages-")]
    result(bool(hp) and all(res.get("requests", {}).get(k) == res["limits"][k] for k in hp)
           and conf.get("pool", "hugepages", fallback="auto") != "no",
           "hugepages requested as resources (%s), and the pool uses them" % ", ".join(hp))
    probe = c.get("livenessProbe", {}).get("exec", {}).get("command", [])
    result(sock in probe and "status" in probe, "liveness: tierctl status through %s" % sock, " ".join(probe))
    ann = ds.get("spec", {}).get("template", {}).get("metadata", {}).get("annotations", {})
    port = listen.rsplit(":", 1)[-1]
    ports = [str(p.get("containerPort")) for p in c.get("ports", [])]
    result(ann.get("prometheus.io/scrape") == "true" and ann.get("prometheus.io/port") == port and port in ports
           and not listen.startswith("127."),
           "metrics port %s annotated for scraping, listening beyond loopback" % port,
           "listen %s, annotations %s, ports %s" % (listen, ann, ports))
    pc = (pod.get("spec", {}).get("containers") or [{}])[0]
    pvols = {v["name"]: v for v in pod.get("spec", {}).get("volumes", [])}
    pm = {m["mountPath"]: m["name"] for m in pc.get("volumeMounts", [])}
    puid = str(pod.get("spec", {}).get("securityContext", {}).get("runAsUser", ""))
    allowed = [conf.get(s, "allow_uid", fallback="") for s in conf.sections() if s.startswith("model ")]
    result(pvols.get(pm.get(sockdir, ""), {}).get("hostPath", {}).get("path") == host(sockdir)
           and any(puid in a.split() for a in allowed),
           "inference pod mounts the socket directory (hostPath %s), runs as an allowed uid %s" % (host(sockdir), puid))
    print("1..%d" % n)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
