"""What bench/run.py and bench/engines.py share: fresh venvs, processes, /proc readings, the
machine, and the generated sections of RESULTS.md. Standard library only: it runs before the
fresh venv exists."""

from __future__ import annotations

import json
import os
import platform
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
LOCK = REPO / "requirements.lock"
PIP_VERSION = "26.3"  # the pip .ci/run installs with
# The packages whose versions decide the numbers: printed at the top of every report.
KEY_PACKAGES = ("httpx", "httpcore", "anyio", "sniffio", "h11", "aiohttp", "httpx-aiohttp",
                "uvloop", "prometheus-client", "pyyaml", "bcrypt")


def _canon(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


# --- fresh venvs ---------------------------------------------------------------------------


class Venv:
    """A venv in a temporary directory with the project installed from this checkout, as a
    user would: `pip install -c requirements.lock .` (plus extras)."""

    def __init__(self, extras: str = "", keep: bool = False):
        self.root = Path(tempfile.mkdtemp(prefix="threads-bench-venv-"))
        self.path = self.root / "venv"
        self.python = self.path / "bin" / "python"
        self.extras = extras
        self.keep = keep
        self.install_seconds = 0.0

    def create(self, log: bool = True) -> Venv:
        target = f".[{self.extras}]" if self.extras else "."
        start = time.monotonic()
        if log:
            print(f"fresh venv {self.path}: python -m venv, pip=={PIP_VERSION}, "
                  f"pip install -c requirements.lock '{target}' ...", flush=True)
        self._run([sys.executable, "-m", "venv", str(self.path)])
        self.pip("install", "-q", f"pip=={PIP_VERSION}")
        # A copy of the source tree: pip builds in place, and the checkout stays untouched.
        src = self.root / "src"
        shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(
            ".git", ".venv", "venv", "__pycache__", "*.egg-info", "build", "dist", "*.db*",
            ".pytest_cache", ".ruff_cache", ".mypy_cache"))
        self.pip("install", "-q", "-c", str(LOCK), f"{src}[{self.extras}]" if self.extras
                 else str(src))
        self.install_seconds = time.monotonic() - start
        if log:
            print(f"installed in {self.install_seconds:.0f} s", flush=True)
        return self

    def pip(self, *args: str) -> str:
        return self._run([str(self.python), "-m", "pip", *args])

    def freeze(self) -> list[str]:
        return [line for line in self.pip("freeze", "--all").splitlines() if line.strip()]

    def _run(self, args: Sequence[str]) -> str:
        run = subprocess.run(args, capture_output=True, text=True, env=clean_env())
        if run.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed:\n{run.stdout}\n{run.stderr}")
        return run.stdout

    def remove(self) -> None:
        if not self.keep:
            shutil.rmtree(self.root, ignore_errors=True)


def clean_env() -> dict[str, str]:
    """The environment for processes of a venv: nothing of the calling venv leaks in."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    return env


def current_freeze() -> list[str]:
    """name==version of every distribution the running interpreter sees."""
    seen = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name and _canon(name) not in seen:
            seen[_canon(name)] = f"{name}=={dist.version}"
    return sorted(seen.values(), key=str.lower)


def key_versions(freeze: Sequence[str]) -> dict[str, str]:
    """The KEY_PACKAGES' versions in a freeze ("absent" when not installed), and Python's."""
    found = {}
    for line in freeze:
        name, sep, version = line.partition("==")
        if sep:
            found[_canon(name)] = version.strip()
        elif " @ " in line:
            found[_canon(line.split(" @ ")[0])] = "local"
    out = {name: found.get(_canon(name), "absent") for name in KEY_PACKAGES}
    return out


def versions_line(versions: dict[str, str], python: str) -> str:
    return f"Python {python}; " + ", ".join(f"{k} {v}" for k, v in versions.items())


# --- processes -----------------------------------------------------------------------------


class Proc:
    """A child process in its own session whose output goes to a log file."""

    def __init__(self, args: Sequence[str], cwd: Path | None = None, stdout_pipe: bool = False):
        self.log_path = Path(tempfile.mkstemp(prefix="threads-bench-", suffix=".log")[1])
        self._log = self.log_path.open("wb")
        self.popen = subprocess.Popen(
            list(args), cwd=cwd, env=clean_env(), start_new_session=True,
            stdout=subprocess.PIPE if stdout_pipe else self._log, stderr=self._log)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def read_line(self, timeout: float) -> str:
        """The next line of a piped stdout, or '' if none came in time."""
        assert self.popen.stdout is not None
        ready, _, _ = select.select([self.popen.stdout], [], [], timeout)
        return self.popen.stdout.readline().decode() if ready else ""

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def output(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 10.0) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        if self.popen.stdout is not None:
            self.popen.stdout.close()
        self._log.close()
        self.log_path.unlink(missing_ok=True)


def start_double(python: str, latency: float) -> tuple[Proc, str]:
    """The Graph API double (bench/double.py) in its own process; (process, base URL)."""
    proc = Proc([python, str(BENCH / "double.py"), "--listen", "127.0.0.1:0",
                 "--latency", str(latency)], stdout_pipe=True)
    line = proc.read_line(30)
    if not line.startswith("READY port="):
        out = proc.output()
        proc.stop()
        raise RuntimeError(f"the double did not start: {line!r}\n{out}")
    return proc, f"http://127.0.0.1:{int(line.split('=', 1)[1])}"


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def status_mb(pid: int, key: str) -> float:
    """A /proc/PID/status size in MB: VmHWM (peak RSS) or VmRSS."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


# --- the machine ---------------------------------------------------------------------------


def machine() -> str:
    model = next((line.split(":", 1)[1].strip() for line in
                  Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor() or "unknown")
    mem = next((int(line.split()[1]) / 1024 / 1024 for line in
                Path("/proc/meminfo").read_text().splitlines()
                if line.startswith("MemTotal:")), 0.0)
    return (f"{os.cpu_count()} CPUs ({model}), {mem:.0f} GiB, {platform.system()} "
            f"{platform.release()}")


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f}"


# --- RESULTS.md ----------------------------------------------------------------------------


def shown_command(script: str, argv: list[str]) -> str:
    """The command line as typed: without where results went, nor what the outer run added."""
    out: list[str] = []
    inner = "--venv-info" in argv
    i = 0
    while i < len(argv):
        a = argv[i]
        i += 1
        if a in ("--venv-info", "--json"):
            i += 1  # and its value
        elif a == "--results":
            if i < len(argv) and not argv[i].startswith("-"):
                i += 1  # its optional value
        elif a.startswith(("--results=", "--json=")) or (a == "--no-venv" and inner):
            continue
        else:
            out.append(a)
    return " ".join([f"python bench/{script}", *out])


def write_section(path: Path, name: str, text: str) -> None:
    """Replace (or append) the generated section `name` of a Markdown file; what is outside
    the markers is left as written."""
    begin = f"<!-- generated by bench/{name}: begin -->"
    end = f"<!-- generated by bench/{name}: end -->"
    old = path.read_text() if path.exists() else "# Benchmark results\n"
    block = f"{begin}\n{text.rstrip()}\n{end}"
    if begin in old and end in old:
        head, rest = old.split(begin, 1)
        new = head + block + rest.split(end, 1)[1]
    else:
        new = old.rstrip() + "\n\n" + block + "\n"
    path.write_text(new)


def as_list(header: str) -> str:
    """A report's header lines as a Markdown list (plain lines would run into one)."""
    return "\n".join(f"- {line}" for line in header.splitlines())


def dump(path: Path | None, payload: object) -> None:
    if path is not None:
        path.write_text(json.dumps(payload, indent=1))
