"""Runs `jitpass serve --demo` and Microsoft 365 Agents Playground side by side, then drive.js against them.

Meant to run as `unshare --net python netns.py WORKDIR`: a private network namespace with only
loopback, so nothing reaches the internet (the Playground sends telemetry and the web UI fetches
fonts from a CDN; both fail quietly) and the ports cannot collide with anything else on the machine.
A do-nothing `xdg-open` comes first on PATH because the Playground opens a browser at start.

Writes WORKDIR/transcript.json (what drive.js saw), WORKDIR/jitpass.log, WORKDIR/playground.log and
WORKDIR/store.db (jitpass's store, for the audit checks); exits with drive.js's status. Every
process it starts is killed (its whole process group) before it exits, whatever happens.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
PLAYGROUND_CLI = HERE / "node_modules" / "@microsoft" / "m365agentsplayground" / "cli.js"
START_TIMEOUT = 15.0  # each of jitpass and the Playground
DRIVE_TIMEOUT = 75.0  # drive.js, for every step (each step waits 15 s at most)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, process: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url}: the process exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f} s")


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the process group, SIGKILL after 5 s."""
    if process.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # so that `finally` stops every process started


def main(workdir: Path) -> int:
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    bin_dir = workdir / "bin"
    bin_dir.mkdir(exist_ok=True)
    opener = bin_dir / "xdg-open"
    opener.write_text("#!/bin/sh\nexit 0\n")
    opener.chmod(0o755)
    playground_dir = workdir / "playground"
    playground_dir.mkdir(exist_ok=True)
    shutil.copy(HERE / ".m365agentsplayground.yml", playground_dir / ".m365agentsplayground.yml")
    home = workdir / "home"
    home.mkdir(exist_ok=True)

    jitpass_port, playground_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JITPASS_", "CONNECTIONS__", "MICROSOFT_APP"))}
    env |= {"HOME": str(home), "PATH": f"{bin_dir}:{env.get('PATH', '/usr/bin:/bin')}",
            "JITPASS_STORE": f"sqlite:///{workdir / 'store.db'}", "JITPASS_MASTER_KEY_FILE": str(workdir / "key"),
            "PORT": str(jitpass_port)}
    jitpass = Path(sys.executable).with_name("jitpass")
    started: list[subprocess.Popen[bytes]] = []
    with open(workdir / "jitpass.log", "wb") as jitpass_log, open(workdir / "playground.log", "wb") as pg_log:
        try:
            server = subprocess.Popen([str(jitpass), "serve", "--demo", "--port", str(jitpass_port)], cwd=workdir,
                                      env=env, stdout=jitpass_log, stderr=subprocess.STDOUT, start_new_session=True)
            started.append(server)
            wait_http(f"http://127.0.0.1:{jitpass_port}/healthz", server, START_TIMEOUT)
            playground = subprocess.Popen(
                ["node", str(PLAYGROUND_CLI), "-e", f"http://127.0.0.1:{jitpass_port}/api/messages", "-c", "msteams",
                 "-p", str(playground_port), "--disable-telemetry"],
                cwd=playground_dir, env=env, stdout=pg_log, stderr=subprocess.STDOUT, start_new_session=True)
            started.append(playground)
            wait_http(f"http://127.0.0.1:{playground_port}/", playground, START_TIMEOUT)
            drive_env = env | {"PLAYGROUND_URL": f"http://127.0.0.1:{playground_port}",
                               "CHROMIUM": os.environ.get("CHROMIUM", "/usr/bin/chromium"),
                               "SCREENSHOT": str(workdir / "playground.png")}
            driver = subprocess.Popen(["node", str(HERE / "drive.js")], cwd=workdir, env=drive_env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
            started.append(driver)
            try:
                out, err = driver.communicate(timeout=DRIVE_TIMEOUT)
            except subprocess.TimeoutExpired:
                stop(driver)
                out, err = driver.communicate()
                err += f"\ndrive.js did not finish within {DRIVE_TIMEOUT:.0f} s".encode()
            lines = [line for line in out.decode(errors="replace").splitlines() if line.startswith("{")]
            transcript = json.loads(lines[-1]) if lines else {"failed": "drive.js printed no transcript"}
            transcript["stderr"] = err.decode(errors="replace")[-4000:]
            (workdir / "transcript.json").write_text(json.dumps(transcript, indent=1))
            return driver.returncode or 0
        finally:
            for process in reversed(started):
                stop(process)


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]).resolve()))
