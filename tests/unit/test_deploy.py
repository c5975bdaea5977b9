"""The deployment files hold together (no Docker here): compose services and references, nginx structure and the
directives streams need, the Dockerfile's shape, and .env.example naming only real settings."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from jobyard.config import ENV_PREFIX, Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    return data


def test_compose_runs_every_process_and_server() -> None:
    services = compose()["services"]
    assert {"nginx", "api-1", "api-2", "worker", "relay", "migrate", "postgres", "rabbitmq", "redis"} <= set(services)
    commands = {name: (svc.get("command") or [None])[0] for name, svc in services.items()}
    assert commands["api-1"] == commands["api-2"] == "api"
    assert (commands["worker"], commands["relay"], commands["migrate"]) == ("worker", "relay", "migrate")


def test_compose_references_resolve() -> None:
    data = compose()
    services = data["services"]
    for name, svc in services.items():
        depends = svc.get("depends_on", {})
        for dependency in depends if isinstance(depends, list) else depends.keys():
            assert dependency in services, f"{name} depends on unknown {dependency}"
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name} mounts missing {source}"
            else:
                assert source in data.get("volumes", {}), f"{name} uses undeclared volume {source}"
        build = svc.get("build")
        if build:
            assert (DEPLOY / build["context"] / build["dockerfile"]).is_file()


def test_compose_uses_quorum_queues_and_passwords_everywhere() -> None:
    services = compose()["services"]
    env = services["api-1"]["environment"]
    assert env["JOBYARD_RABBITMQ_QUEUE_TYPE"] == "quorum"
    assert "${REDIS_PASSWORD" in env["JOBYARD_REDIS_URL"] and "${POSTGRES_PASSWORD" in env["JOBYARD_DATABASE_URL"]
    assert "--requirepass" in services["redis"]["command"]
    policy = services["redis"]["command"][services["redis"]["command"].index("--maxmemory-policy") + 1]
    assert policy == "noeviction" or policy.startswith("volatile-")
    settings_env = {k for k in env if k.startswith(ENV_PREFIX)}
    assert all(k[len(ENV_PREFIX) :].lower() in Settings.model_fields for k in settings_env)


def _nginx_blocks(text: str) -> dict[str, str]:
    """``location …`` and ``upstream …`` blocks by their header (a parse that checks the braces balance)."""
    text = re.sub(r"#[^\n]*", "", text)
    depth, blocks, stack = 0, {}, []
    header_start = 0
    for i, ch in enumerate(text):
        if ch == "{":
            stack.append((text[header_start:i].strip().splitlines()[-1].strip(), i))
            depth += 1
            header_start = i + 1
        elif ch == "}":
            assert depth > 0, "unbalanced '}' in nginx.conf"
            header, start = stack.pop()
            blocks[header] = text[start + 1 : i]
            depth -= 1
            header_start = i + 1
        elif ch == ";":
            header_start = i + 1
    assert depth == 0, "unbalanced '{' in nginx.conf"
    for statement in re.split(r"[;{}]", text):
        assert not statement.strip() or len(statement.split()) >= 1
    return blocks


def test_nginx_config_is_stream_friendly_and_points_at_the_api_services() -> None:
    blocks = _nginx_blocks((DEPLOY / "nginx.conf").read_text())
    upstream = blocks["upstream jobyard_api"]
    servers = re.findall(r"server\s+([\w.-]+):(\d+)", upstream)
    assert {host for host, _ in servers} == {"api-1", "api-2"} <= set(compose()["services"])
    events = next(body for header, body in blocks.items() if "events$" in header)
    assert "proxy_buffering off" in events and "proxy_read_timeout 1h" in events
    websockets = next(body for header, body in blocks.items() if "ws$" in header)
    assert "proxy_set_header Upgrade $http_upgrade" in websockets and "$connection_upgrade" in websockets
    assert "expires 30d" in blocks["location /static/"]
    for header, body in blocks.items():
        if header.startswith("location") and "deny all" not in body:
            assert "proxy_pass http://jobyard_api" in body, header


def test_dockerfile_runs_jobyard_as_a_user() -> None:
    lines = [line.split()[0] for line in (DEPLOY / "Dockerfile").read_text().splitlines() if line and line[0].isupper()]
    assert lines[0] == "FROM" and "USER" in lines and "ENTRYPOINT" in lines
    assert lines.index("USER") < lines.index("ENTRYPOINT")


def test_env_example_names_only_real_settings() -> None:
    names = [
        line.split("=", 1)[0]
        for line in (ROOT / ".env.example").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    jobyard = [n for n in names if n.startswith(ENV_PREFIX)]
    assert jobyard and all(n[len(ENV_PREFIX) :].lower() in Settings.model_fields for n in jobyard)
    Settings.from_env(
        {
            n: v
            for n, v in (
                ln.split("=", 1) for ln in (ROOT / ".env.example").read_text().splitlines() if ln.startswith(ENV_PREFIX)
            )
        }
    )
    assert {"POSTGRES_PASSWORD", "RABBITMQ_PASSWORD", "REDIS_PASSWORD"} <= set(names)
