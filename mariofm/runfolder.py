"""Where commands write: a run folder owned by one training run, and destinations checked before the work.

    with RunLock(folder):                     # a second process gets RunFolderError naming this one
        old = run_files(folder)               # a new run refuses a folder that holds files ...
        remove_run_files(folder)              # ... unless told to overwrite them (`train --overwrite`)
    writable_folder("outputs/gen")            # generate/evaluate/export: refuse a file or a read-only folder
                                              # at once, not after minutes of sampling

The lock is the file `.lock` in the run folder, locked with the operating system's advisory lock (`fcntl.flock`
on Linux and macOS, `msvcrt.locking` on Windows, where it is untested): the kernel drops it when its process
ends, however it ends, so a crashed run never blocks the folder. While held, the file names the holder (pid,
host, start time, command) for the error a second process gets. A holder that vanished without a clean exit
(SIGKILL, power loss) leaves its name in the file: the next run on the same host takes the lock over and says
so; a name from another host is refused, since this host cannot see whether that run still goes on (network
file systems differ in how they share locks).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

LOCK = ".lock"
RUN_INFO = "run.json"  # what the run trains on, for a reader (its checkpoint holds the same, for --resume)
# what a training run writes into its folder (mariofm.train): all that `--overwrite` may remove
RUN_PATTERNS = ("config.json", "run.json", "metrics.jsonl", "loss_curve.png", "checkpoint.pt", "video_model.pt",
                "*.tmp", "sample_epoch*.gif", "grid_epoch*.gif", "rollout_epoch*.gif")


class RunFolderError(ValueError):
    """A run folder that is in use, holds another run, or cannot be written; a destination that cannot be."""


# ----------------------------------------------------------------------------------------------- the lock
def _try_lock(fd: int) -> bool:
    """Take the OS lock on the open file `fd` without waiting; False when another process holds it."""
    try:
        import fcntl
    except ImportError:  # Windows: lock one byte far past the text, which other processes must still read
        import msvcrt
        os.lseek(fd, 1 << 20, os.SEEK_SET)
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _holder(text: str) -> dict:
    try:
        holder = json.loads(text)
    except ValueError:
        return {}
    return holder if isinstance(holder, dict) else {}


def _describe(holder: dict) -> str:
    return f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')}, started {holder.get('started', '?')}" \
           f", command: {holder.get('command', '?')}"


class RunLock:
    """Hold `folder/.lock` while a run writes into `folder` (created if missing). Raises RunFolderError naming
    the holder when another process holds it. On release the file is emptied, so a name left in it means its
    holder ended without releasing it."""

    def __init__(self, folder: str | Path):
        self.folder, self.fd, self.created = Path(folder), None, False

    def __enter__(self) -> RunLock:
        folder = self.folder
        if folder.exists() and not folder.is_dir():
            raise RunFolderError(f"the run folder {folder} is a file; choose a folder for --out")
        self.created = not folder.exists()
        try:
            folder.mkdir(parents=True, exist_ok=True)
            self.fd = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise RunFolderError(f"cannot write in the run folder {folder} ({err.strerror}); choose another "
                                 f"--out") from None
        if not _try_lock(self.fd):
            holder = _holder(self._read())
            os.close(self.fd)
            self.fd = None
            raise RunFolderError(f"{folder} is in use by another training run ({_describe(holder)}). Wait for it "
                                 f"to end or stop it; two runs writing one folder would overwrite each other's "
                                 f"checkpoints")
        previous = _holder(self._read())
        if previous and previous.get("host") != socket.gethostname():
            os.close(self.fd)  # the file keeps that run's name
            self.fd = None
            raise RunFolderError(f"{folder / LOCK} names a run on another host ({_describe(previous)}), and this "
                                 f"host cannot tell whether it still runs. If it does not, delete {folder / LOCK}")
        if previous:
            print(f"taking over the lock of {folder}: its holder ({_describe(previous)}) ended without releasing "
                  f"it", file=sys.stderr)
        self._write(json.dumps(dict(pid=os.getpid(), host=socket.gethostname(), started=time.strftime("%c"),
                                    command=" ".join(sys.argv))))
        return self

    def _read(self) -> str:
        os.lseek(self.fd, 0, os.SEEK_SET)
        return os.read(self.fd, 1 << 16).decode(errors="replace")

    def _write(self, text: str) -> None:
        os.ftruncate(self.fd, 0)
        os.lseek(self.fd, 0, os.SEEK_SET)
        os.write(self.fd, text.encode())

    def __exit__(self, *exc) -> None:
        if self.fd is None:
            return
        self._write("")  # a clean release: the next run finds no name in the file
        os.close(self.fd)  # closing drops the OS lock
        self.fd = None
        if self.created and [p.name for p in self.folder.iterdir()] == [LOCK]:  # nothing came of it: tidy up
            with contextlib.suppress(OSError):
                (self.folder / LOCK).unlink()
                self.folder.rmdir()


# ----------------------------------------------------------------------------------------------- new runs
def folder_contents(folder: Path) -> list[Path]:
    """Everything in `folder` but the lock file, sorted (nothing when it does not exist)."""
    return sorted(p for p in folder.iterdir() if p.name != LOCK) if folder.is_dir() else []


def run_files(folder: Path) -> list[Path]:
    """The files a training run wrote into `folder`."""
    return sorted({p for pattern in RUN_PATTERNS for p in folder.glob(pattern) if p.is_file()})


def check_new_run(folder: Path, overwrite: bool) -> list[Path]:
    """The files a new run in `folder` will replace (none when it is empty). Refuses a folder that holds
    anything unless `overwrite`, without touching it: a run folder holds one run."""
    contents = folder_contents(folder)
    if contents and not overwrite:
        names = ", ".join(p.name for p in contents[:8]) + (", ..." if len(contents) > 8 else "")
        raise RunFolderError(f"{folder} is not empty ({names}): it holds another run. Continue that run with "
                             f"--resume {folder}, choose a new --out, or pass --overwrite to delete the run's "
                             f"files there")
    return run_files(folder)


def remove_run_files(folder: Path, files: list[Path]) -> None:
    """Delete `files` (an earlier run's, from `check_new_run`), saying which; other files stay."""
    if files:
        print(f"--overwrite: removing the earlier run's {', '.join(p.name for p in files)} from {folder}",
              file=sys.stderr)
    for path in files:
        path.unlink(missing_ok=True)
    if kept := [p.name for p in folder_contents(folder)]:
        print(f"--overwrite: keeping {', '.join(kept)} in {folder} (not written by a training run)",
              file=sys.stderr)


def resume_data(stored: str | None, given: str | Path | None, checkpoint: Path) -> Path:
    """The data folder a resumed run trains on: the one stored in its `checkpoint`, unless `given` replaces
    it (which is said)."""
    if given is None:
        if stored is None:  # a checkpoint from before the data folder was stored
            raise ValueError(f"{checkpoint} does not say which data folder it trained on; give it with --data")
        return Path(stored)
    if stored is not None and Path(given).resolve() != Path(stored):
        print(f"--data {given} replaces the run's own data folder {stored}", file=sys.stderr)
    return Path(given)


# ----------------------------------------------------------------------------------------------- destinations
def writable_folder(folder: str | Path, option: str = "--out") -> Path:
    """`folder`, created if missing, once a file could be written there; else a RunFolderError saying why."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise RunFolderError(f"{option} {folder} is a file; give a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):  # the one sure test: permissions, read-only mounts, quotas
            pass
    except OSError as err:
        raise RunFolderError(f"{option} {folder}: cannot write there ({err.strerror}); choose another folder") from None
    return folder


def writable_file(path: str | Path, option: str = "--out") -> Path:
    """`path`, once its folder is writable and `path` is not a folder itself; else a RunFolderError."""
    path = Path(path)
    if path.is_dir():
        raise RunFolderError(f"{option} {path} is a folder; give a file name")
    writable_folder(path.parent, option)
    if path.exists() and not os.access(path, os.W_OK):
        raise RunFolderError(f"{option} {path}: the file is read-only")
    return path


__all__ = ["LOCK", "RUN_INFO", "resume_data", "RUN_PATTERNS", "RunFolderError", "RunLock",
           "folder_contents", "run_files", "check_new_run",
           "remove_run_files", "writable_folder", "writable_file"]
