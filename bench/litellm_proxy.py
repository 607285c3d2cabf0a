"""The LiteLLM proxy, the relay Sluice is compared with: pinned, installed into its own
virtualenv (bench/.venv-litellm), no database, a master key, both benchmark models routed to the
same mock upstream paths as Sluice's channels."""

import json
import os
from pathlib import Path

from processes import BENCH, Processes, ensure_venv, free_port, wait_for_port
from workload import MODELS, UPSTREAM_KEY

LITELLM_VENV = BENCH / ".venv-litellm"
# The newest LiteLLM whose [proxy] extra installs from PyPI here (1.108+ needs packages that
# are not published there; 1.107.0 was the compromised release). httptools: uvicorn's fast
# HTTP parser, which Sluice runs with too.
LITELLM_REQUIREMENTS = ["litellm[proxy]==1.106.12", "httptools==0.9.0"]
LITELLM_VERSION = "1.106.12"
LITELLM_MASTER_KEY = "sk-litellm-bench-master"


def ensure_litellm() -> None:
    ensure_venv(
        LITELLM_VENV,
        LITELLM_REQUIREMENTS,
        ["import importlib.metadata as m; print(m.version('litellm'))", LITELLM_VERSION],
    )


def start_litellm(procs: Processes, workdir: Path, logs: Path, upstream_url: str, workers: int):
    port = free_port()
    config = workdir / "litellm.yaml"
    model_list = "".join(
        f"""
  - model_name: {model}
    litellm_params:
      model: openai/{model}
      api_base: {upstream_url}/{mode}/v1
      api_key: {UPSTREAM_KEY}
"""
        for mode, model in MODELS.items()
    )
    config.write_text(
        f"""model_list:{model_list}
general_settings:
  master_key: {LITELLM_MASTER_KEY}
litellm_settings:
  telemetry: false
"""
    )
    # Same as Sluice's --no-access-log: uvicorn's access lines are not part of the comparison.
    log_config = workdir / "litellm-logging.json"
    log_config.write_text(
        json.dumps(
            {
                "version": 1,
                "disable_existing_loggers": False,
                "handlers": {"default": {"class": "logging.StreamHandler"}},
                "loggers": {
                    "uvicorn": {"handlers": ["default"], "level": "WARNING"},
                    "uvicorn.error": {"level": "WARNING"},
                    "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
                },
            }
        )
    )
    env = dict(os.environ)
    env.update(
        {
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # no download of the price map at start
            "LITELLM_MODE": "PRODUCTION",
            "LITELLM_LOG": "ERROR",
            "NO_PROXY": "127.0.0.1,localhost",
        }
    )
    env.pop("DATABASE_URL", None)
    log_path = logs / "litellm.log"
    process = procs.start(
        "litellm",
        [
            str(LITELLM_VENV / "bin/litellm"),
            "--config",
            str(config),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--num_workers",
            str(workers),
            "--log_config",
            str(log_config),
        ],
        log_path=log_path,
        env=env,
        cwd=workdir,
    )
    wait_for_port(port, process, "LiteLLM", log_path, timeout=180)
    return process, f"http://127.0.0.1:{port}"
