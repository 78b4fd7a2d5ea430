"""Images without a registry: the Debian base from the bootstrap's mmdebstrap root file
system, the pause image FROM scratch, `docker build` of any Dockerfile, and loading an image
from dockerd into every node's containerd."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from carstream import toolchain
from localcluster.layout import BASE_IMAGE, NODES, PAUSE_IMAGE, Node, RunDir
from localcluster.processes import ClusterError
from localcluster.runtime import DOCKER_CLI, ctr, docker, docker_env

# What Docker Hub's debian image sets on top of its root file system.
BASE_IMAGE_CHANGES = (
    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    'CMD ["bash"]',
)
PAUSE_DOCKERFILE = """\
FROM scratch
COPY pause /pause
USER 65535:65535
ENTRYPOINT ["/pause"]
"""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while chunk := source.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _image_comment(run: RunDir, tag: str) -> str | None:
    result = subprocess.run(
        [DOCKER_CLI, "image", "inspect", "--format={{.Comment}}", tag],
        capture_output=True,
        text=True,
        env=docker_env(run),
        check=False,
    )
    return result.stdout.strip() if result.returncode == 0 else None


def import_base_image(run: RunDir) -> None:
    """`docker import` of the bootstrap's root file system as debian:bookworm-slim, unless the
    image there already came from this very file (its comment holds the file's digest)."""
    rootfs = toolchain.base_image_tar()
    comment = f"carstream base image from rootfs sha256:{_sha256(rootfs)}"
    if _image_comment(run, BASE_IMAGE) == comment:
        return
    changes = [argument for change in BASE_IMAGE_CHANGES for argument in ("--change", change)]
    docker(run, "import", *changes, "--message", comment, str(rootfs), BASE_IMAGE)


def build_pause_image(run: RunDir) -> None:
    context = run.scratch / "pause-image"
    context.mkdir(parents=True, exist_ok=True)
    shutil.copy2(toolchain.binary("pause"), context / "pause")
    (context / "Dockerfile").write_text(PAUSE_DOCKERFILE)
    build_image(run, PAUSE_IMAGE, context / "Dockerfile", context)


def build_image(
    run: RunDir,
    tag: str,
    dockerfile: Path,
    context: Path,
    build_args: Mapping[str, str] | None = None,
    secrets: Mapping[str, Path] | None = None,
    target: str | None = None,
) -> float:
    """`docker build` with BuildKit on the cluster's dockerd; returns the seconds it took.
    SECRETS maps a BuildKit secret id to a file (e.g. {"extra-ca": Path(...)}); the output
    goes to logs/build-<tag>.log."""
    command = [DOCKER_CLI, "build", "--progress=plain", f"--tag={tag}", f"--file={dockerfile}"]
    for name, value in (build_args or {}).items():
        command.append(f"--build-arg={name}={value}")
    for name, path in (secrets or {}).items():
        if not path.is_file():
            raise ClusterError(f"secret {name}: {path} is not a file")
        command.append(f"--secret=id={name},src={path}")
    if target:
        command.append(f"--target={target}")
    command.append(str(context))
    log = run.logs / f"build-{tag.replace('/', '_').replace(':', '_')}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with log.open("w") as output:
        result = subprocess.run(
            command, stdout=output, stderr=subprocess.STDOUT, env=docker_env(run), check=False
        )
    if result.returncode != 0:
        lines = log.read_text(errors="replace").splitlines()
        raise ClusterError(
            f"docker build of {tag} failed; end of {log}:\n" + "\n".join(lines[-40:])
        )
    prune_build_cache(run)
    return time.monotonic() - started


# What BuildKit may keep between builds: the layers of carstream's and spark-operator's images
# (pip and jar layers reused by the next build). Unbounded, every rebuild of a changed image
# left its 2-3 GB behind in the data root under the cache folder: 29 GB after a day.
BUILD_CACHE_KEEP = "6GB"


def prune_build_cache(run: RunDir) -> None:
    """Drops the build cache beyond BUILD_CACHE_KEEP (least recently used first) and the
    untagged images a rebuild left behind. Only this cluster's own dockerd is touched."""
    docker(run, "builder", "prune", "--force", f"--keep-storage={BUILD_CACHE_KEEP}")
    docker(run, "image", "prune", "--force")


def load_image(run: RunDir, *tags: str, nodes: Sequence[Node] = NODES) -> float:
    """`docker save TAGS` once, `ctr images import` into each node's containerd (what kind's
    `load docker-image` does); returns the seconds it took."""
    started = time.monotonic()
    archive = run.scratch / "image.tar"
    archive.parent.mkdir(parents=True, exist_ok=True)
    try:
        docker(run, "save", f"--output={archive}", *tags, timeout=1800)
        # both nodes at once: each import mostly waits for its containerd to write layers
        with ThreadPoolExecutor(max_workers=len(nodes)) as pool:
            imports = [
                pool.submit(ctr, run, node, "images", "import", str(archive)) for node in nodes
            ]
            for finished in imports:
                finished.result()
    finally:
        archive.unlink(missing_ok=True)
    return time.monotonic() - started
