#!/usr/bin/env python3
"""Checks docker-compose.yml without a container engine.

1. Validates it against the Compose Specification's JSON schema (tools/schemas/compose-spec.json,
   copied from github.com/compose-spec/compose-spec, Apache-2.0), after YAML merge keys and
   `x-` extension fields are resolved as Compose resolves them.
2. Checks what the schema cannot: every file a service mounts from this repository exists,
   every `depends_on` names a service, the "replicas" profile's proxies share one Redis cache,
   and the load balancer's backends are those replicas.

With `docker compose` or `podman-compose` on PATH it also runs their `config` command.
Usage: python3 tools/check_compose.py [docker-compose.yml]. Needs PyYAML and jsonschema (the
.venv of scripts/setup.sh has both).
"""

import json
import pathlib
import re
import shutil
import subprocess
import sys

import jsonschema
import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent


def fail(message: str) -> None:
    print(f"compose: {message}", file=sys.stderr)
    sys.exit(1)


def main() -> None:
    path = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docker-compose.yml"
    doc = yaml.safe_load(path.read_text())
    schema = json.loads((ROOT / "tools/schemas/compose-spec.json").read_text())
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(doc), key=lambda e: list(e.path))
    for e in errors:
        print(f"compose: {'/'.join(map(str, e.path)) or '<root>'}: {e.message}", file=sys.stderr)
    if errors:
        sys.exit(1)

    services = doc.get("services", {})
    for name, svc in services.items():
        for dep in svc.get("depends_on", []):
            if dep not in services:
                fail(f"{name} depends on {dep}, which is not a service")
        for vol in svc.get("volumes", []):
            source = vol.split(":", 1)[0] if isinstance(vol, str) else vol.get("source", "")
            if source.startswith("./") and not (path.parent / source).exists():
                fail(f"{name} mounts {source}, which does not exist")

    replicas = [n for n, s in services.items() if "replicas" in s.get("profiles", []) and
                s.get("image", "").startswith("lingua-proxy")]
    if len(replicas) < 2:
        fail(f"the replicas profile has {len(replicas)} proxy replicas, not two or more")
    urls = {services[n]["environment"].get("LINGUA_PROXY_CACHE__REDIS_URL") for n in replicas}
    backends = {services[n]["environment"].get("LINGUA_PROXY_CACHE__BACKEND") for n in replicas}
    if backends != {"redis"} or len(urls) != 1 or None in urls:
        fail(f"the replicas do not share one Redis cache: {backends} {urls}")
    host = re.match(r"redis://([^:/]+)", next(iter(urls)))
    if not host or host.group(1) not in services:
        fail(f"the replicas' Redis {urls} is not a service")
    cfg = (ROOT / "deploy/haproxy/haproxy.cfg").read_text()
    servers = set(re.findall(r"^\s*server\s+\S+\s+([\w-]+):8080", cfg, re.M))
    if servers != set(replicas):
        fail(f"the balancer's backends {sorted(servers)} are not the replicas {sorted(replicas)}")

    for tool in (["docker", "compose"], ["podman-compose"]):
        usable = shutil.which(tool[0]) and subprocess.run(
            tool + ["version"], capture_output=True).returncode == 0
        if usable:
            out = subprocess.run(tool + ["-f", str(path), "--profile", "replicas", "config"],
                                 capture_output=True, text=True)
            if out.returncode != 0:
                fail(f"{' '.join(tool)} config: {out.stderr.strip()}")
            print(f"compose: {' '.join(tool)} config accepts it")
            break
    print(f"compose: {path.name} is valid against the Compose Specification schema; "
          f"{len(replicas)} replicas share Redis behind the balancer")


if __name__ == "__main__":
    main()
