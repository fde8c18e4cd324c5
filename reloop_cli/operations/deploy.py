"""Deploy on promotion: whenever the main chain's live version changes (the gate, `promote`,
`rollback`, a first version), it is published for serving, and an optional command tells the
rest of the fleet.

Publishing writes a release (`serving/release.py`: weights, metadata, vocabulary, column forms,
and TorchScript with its feature map for other serving stacks) and swaps `serving/LIVE` to it in
one rename; `reloop serve` picks it up between requests. It is idempotent: a live version that is
published already is left alone, so every cycle can end with it (a run killed between promotion
and publishing is finished by the next). `serving.on_publish` (say, `aws s3 sync {path}
s3://models/{version}`) runs after the swap with the version, release path and chain filled in;
if it fails, that is logged and recorded in the registry, and the live version stays as it is.
"""

from __future__ import annotations

import logging
import shlex
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

from reloop_cli.adapt.keys import training_key_stats
from reloop_cli.columns import MAIN_CHAIN
from reloop_cli.errors import BadInput
from reloop_cli.operations.export import export_version
from reloop_cli.serving.arms import CANDIDATE_POINTER, read_candidate
from reloop_cli.serving.release import (
    KEY_STATS,
    commit_candidate,
    commit_release,
    pointer,
    prune_releases,
    stage_release,
)
from reloop_cli.spec.pipeline import spec_from_dict
from reloop_cli.store.registry import Registry
from reloop_cli.store.workspace import Workspace
from reloop_cli.versions.checkpoint import load_version

log = logging.getLogger("reloop")
HOOK_OUTPUT_CHARS = 2_000  # of the command's output, kept in the registry


@dataclass
class Deployment:
    """A version published for serving, and what its hook did (None: no hook set)."""

    version: int
    release: str
    path: str
    hook: str | None = None
    hook_returncode: int | None = None
    hook_output: str | None = None

    @property
    def hook_failed(self) -> bool:
        return self.hook is not None and self.hook_returncode != 0

    def to_dict(self) -> dict:
        return asdict(self)


def publish_live(ws: Workspace, registry: Registry, chain: str = MAIN_CHAIN) -> Deployment | None:
    """Publish the chain's live version for serving, unless it is published already."""
    live = registry.live(chain)
    current = pointer(ws.serving)
    if live is None or (current and current["version"] == live and current["chain"] == chain):
        return None
    meta = registry.version_meta(live) or {}
    settings = spec_from_dict(meta["spec"], f"v{live}").serving if "spec" in meta else None
    staging, manifest = stage_full_release(ws, live, chain)
    target = commit_release(ws, staging, manifest)
    if settings is not None:
        prune_releases(ws, settings.keep_releases)
    deployment = Deployment(live, manifest["release"], str(target))
    if settings is not None and settings.on_publish:
        _run_hook(deployment, settings.on_publish, settings.on_publish_timeout, chain)
    registry.record_deployment(
        chain,
        live,
        deployment.release,
        deployment.hook,
        deployment.hook_returncode,
        deployment.hook_output,
    )
    log.info("published v%d for serving (%s)", live, deployment.release)
    return deployment


def stage_full_release(ws: Workspace, version: int, chain: str) -> tuple[Path, dict]:
    """A release of `version` staged whole: weights, vocabulary, key statistics, TorchScript."""
    staging, manifest = stage_release(ws, version, chain)
    write_key_stats(ws, version, staging)
    exported = export_version(ws, version, "torchscript", staging / "model.pt")
    Path(exported.features).replace(staging / "features.json")
    return staging, manifest


def publish_candidate(ws: Workspace, version: int, arm: dict, chain: str = MAIN_CHAIN) -> str:
    """Publish `version` as an experiment's candidate beside the live one (`serving/CANDIDATE`);
    returns its release name. The pointer is rewritten with a new share or stage by
    `move_candidate`, without a new release."""
    staging, manifest = stage_full_release(ws, version, chain)
    commit_candidate(ws, staging, manifest, {**arm, "version": version})
    log.info(
        "published v%d as the candidate of %s (%s)", version, arm["experiment"], manifest["release"]
    )
    return manifest["release"]


def move_candidate(ws: Workspace, arm: dict) -> None:
    """The running candidate's pointer with a new share, stage or mode (one atomic rename)."""
    current = read_candidate(ws.serving)
    if current is None:
        raise BadInput(f"{ws.serving}: no candidate is published to move")
    ws.write_json({**current.to_dict(), **arm}, ws.serving / CANDIDATE_POINTER)


def withdraw_candidate(ws: Workspace) -> bool:
    """Remove `serving/CANDIDATE`: servers go back to live alone; True when there was one."""
    path = ws.serving / CANDIDATE_POINTER
    if not path.exists():
        return False
    path.unlink()
    return True


def write_key_stats(ws: Workspace, version: int, staging: Path) -> None:
    """The standardised memory key's statistics over the version's training rows, beside the
    release, so `reloop serve` can hash the keys replay measured (`adapt.memory_key`)."""
    try:
        stats = training_key_stats(ws, load_version(ws, version))
    except BadInput as error:  # its training days are gone: a standardised key is refused later
        log.warning("v%d: no key statistics in its release (%s)", version, error)
        return
    ws.write_json(stats.to_dict(), staging / KEY_STATS)


def _run_hook(deployment: Deployment, template: str, timeout: float, chain: str) -> None:
    """Run `serving.on_publish`; its failure is reported, never raised."""
    command = template.format(version=deployment.version, path=deployment.path, chain=chain)
    deployment.hook = command
    try:
        done = subprocess.run(
            shlex.split(command), capture_output=True, text=True, timeout=timeout, check=False
        )
        deployment.hook_returncode = done.returncode
        deployment.hook_output = (done.stdout + done.stderr)[-HOOK_OUTPUT_CHARS:]
    except (OSError, subprocess.TimeoutExpired) as error:
        deployment.hook_returncode = -1
        deployment.hook_output = f"{type(error).__name__}: {error}"[-HOOK_OUTPUT_CHARS:]
    if deployment.hook_failed:
        log.warning(
            "serving.on_publish failed (exit %s) for v%d: %s; v%d stays live",
            deployment.hook_returncode,
            deployment.version,
            deployment.hook_output.strip().splitlines()[-1] if deployment.hook_output else "",
            deployment.version,
        )
