"""Writing artifacts: checked before any work, locked while a run writes them, staged under temporary names and
published together.

- `check_outputs`: an output is a regular file or absent, not an input of the run, in a folder this process can
  write (tried, not only asked: root passes os.access on a read-only mount), with a name the file system takes.
  Anything else is one InputError before the run starts.
- `locked`: an advisory fcntl lock per output (`.NAME.lock` beside it, removed when released), so runs writing the
  same file take turns instead of interleaving their renames.
- `staged_outputs`: every file of a run is written into a scratch folder beside its destination, then renamed into
  place in one go, each manifest after its artifact and the last manifest as the commit point.

Why renames into place and not a generation folder: the engine must stay a raw plan at the path the user gave (trtexec,
Triton and DeepStream open it there), with `<engine>.json` beside it, so the pair cannot become one directory entry.
What makes the pair one unit instead: (1) both files exist complete under temporary names before either is renamed,
(2) the renames (microseconds) run with Ctrl-C/SIGTERM deferred, so an interrupt leaves the old pair or the new one,
(3) writers hold the lock, so two runs never interleave their renames, and (4) readers compare the manifest's
SHA-256 with the file (manifest.read_manifest), so the only state a hard kill inside those microseconds can leave, a
new engine beside the old manifest, is refused with "SHA-256 differs", never used.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import shutil
import signal
import stat
import tempfile
import threading
from pathlib import Path
from typing import Callable, Iterable, Iterator

from . import strict_json
from .errors import InputError

MANIFEST_SUFFIX = ".json"
NAME_MAX = 255            # when the file system does not say (pathconf)
SCRATCH_PREFIX = ".refiner-edge-"
_held: dict[str, list] = {}   # lock path -> [fd, count]: a run that holds a lock may take it again (the chain's stages)


def manifest_path(artifact: str | Path) -> Path:
    artifact = Path(artifact)
    return artifact.with_name(artifact.name + MANIFEST_SUFFIX)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def name_max(folder: str | Path) -> int:
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError):
        return NAME_MAX


def hidden_name(name: str, suffix: str, limit: int = NAME_MAX) -> str:
    """`.NAME<suffix>`, with NAME shortened so the whole fits in `limit` bytes: a temporary or lock file must not be
    what makes a long but legal file name fail."""
    room = limit - 1 - len(suffix.encode())
    raw = os.fsencode(name)
    if len(raw) <= room:
        return f".{name}{suffix}"
    digest = hashlib.sha256(raw).hexdigest()[:16]
    return f".{digest}{suffix}"


@contextlib.contextmanager
def deferred_interrupts() -> Iterator[None]:
    """Hold Ctrl-C (and SIGTERM) until the block is done, then raise KeyboardInterrupt: for the renames that publish
    a run's files and the clean-up after a failure, which take microseconds and must not stop half-way. A Python
    handler, not a signal mask: the C-level signal may land on any thread (ONNX Runtime's, torch's)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = {s: signal.signal(s, lambda signum, frame: received.append(signum))
                for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if received:
            raise KeyboardInterrupt


# --- checks before any work ---------------------------------------------------------------------------------------

_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"))


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)


def _existing_folder(path: Path) -> Path:
    folder = path.absolute().parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder


def _check_writable(folder: Path, path: Path, option: str, tried: set) -> None:
    if folder in tried:
        return
    reason = None if os.access(folder, os.W_OK | os.X_OK) else os.strerror(errno.EACCES)
    if reason is None:
        try:   # root passes os.access on a read-only mount, /proc and the like: create a file to know
            fd, probe = tempfile.mkstemp(prefix=SCRATCH_PREFIX, dir=folder)
            os.close(fd)
            os.unlink(probe)
        except OSError as e:
            reason = e.strerror or type(e).__name__
    if reason is not None:
        raise InputError(f"{option} {path}: cannot write in {folder} ({reason})")
    tried.add(folder)


def check_outputs(*outputs: str | Path | None, inputs: Iterable[str | Path | None] = (), option: str = "-o") -> None:
    """Refuse, before any work, an output that is not a regular file, is one of `inputs`, lies in a folder this
    process cannot write, or whose name (or its manifest's, which the caller lists) is longer than the file system
    allows. Missing folders are fine: they are created when the run publishes."""
    tried: set = set()
    inputs = [Path(i) for i in inputs if i is not None]
    for out in outputs:
        if out is None:
            continue
        path = Path(out)
        folder = _existing_folder(path)
        limit = name_max(folder) if folder.is_dir() else NAME_MAX
        size = len(os.fsencode(path.name))
        if size > limit:
            raise InputError(f"{option} {path.parent / (path.name[:24] + '...')}: the name is {size} bytes and this "
                             f"file system allows {limit}")
        try:
            st = os.stat(path)
        except FileNotFoundError:
            st = None
        except NotADirectoryError:
            raise InputError(f"{option} {path}: a folder on that path is a file") from None
        except OSError as e:
            raise InputError(f"{option} {path}: {e.strerror}") from None
        if st is not None and not stat.S_ISREG(st.st_mode):
            kind = next((k for test, k in _KINDS if test(st.st_mode)), "not a regular file")
            raise InputError(f"{option} {path} is {kind}, not a regular file: give a file name to write")
        for given in inputs:
            if (st is not None or given.exists()) and _same_file(path, given):
                raise InputError(f"{option} {path} is also an input of this run ({given}): write to another file")
        if not folder.is_dir():
            raise InputError(f"{option} {path}: {folder} is a file, not a folder")
        _check_writable(folder, path, option, tried)


def check_folder_output(path: str | Path, option: str = "-o") -> None:
    """A folder a run writes into (and publishes beside): a folder or absent, and writable where it will be."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputError(f"{option} {path} exists and is not a folder: give a folder to write into")
    tried: set = set()
    for folder in {path if path.is_dir() else _existing_folder(path / "x"), _existing_folder(path)}:
        if not folder.is_dir():
            raise InputError(f"{option} {path}: {folder} is a file, not a folder")
        _check_writable(folder, path, option, tried)


def check_artifact(output: str | Path | None, inputs: Iterable[str | Path | None] = (), option: str = "-o",
                   extra: Iterable[str | Path] = ()) -> None:
    """check_outputs for an artifact, its manifest and any file written beside them."""
    if output is not None:
        check_outputs(output, manifest_path(output), *extra, inputs=inputs, option=option)


# --- locks ----------------------------------------------------------------------------------------------------------

def lock_path(path: str | Path) -> Path:
    path = Path(path).absolute()
    return path.with_name(hidden_name(path.name, ".lock", name_max(_existing_folder(path))))


def _make_folder(folder: Path) -> list[Path]:
    """Create `folder` and its missing parents; returns those created (to remove again if the run fails)."""
    created = []
    for parent in reversed([folder, *folder.parents]):
        if not parent.exists():
            try:
                parent.mkdir()
                created.append(parent)
            except FileExistsError:
                pass
            except OSError as e:
                raise InputError(f"cannot create the folder {parent} ({e.strerror})") from None
    return created


def _remove_folders(created: list[Path]) -> None:
    for folder in reversed(created):
        with contextlib.suppress(OSError):
            folder.rmdir()


def _acquire(lock: Path, what: Path, note: Callable[[str], None]) -> int:
    waited = False
    while True:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666 & ~_umask())
        except OSError as e:
            raise InputError(f"cannot write {what} ({e.strerror}: {lock.name})") from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if not waited:
                    note(f"waiting for another refiner-edge run that is writing {what}")
                    waited = True
                fcntl.flock(fd, fcntl.LOCK_EX)   # Ctrl-C interrupts the wait
            # the holder before us removes the file when it releases: a lock on that unlinked file guards nothing
            mine = os.fstat(fd)
            try:
                now = os.stat(lock)
            except FileNotFoundError:
                now = None
            if now is not None and (now.st_dev, now.st_ino) == (mine.st_dev, mine.st_ino):
                return fd
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)


@contextlib.contextmanager
def locked(*paths: str | Path | None, note: Callable[[str], None] = lambda message: None) -> Iterator[None]:
    """Hold the advisory lock of each path (taken in sorted order, so two runs never wait on each other); a run
    that already holds one takes it again. Each lock file is removed when released."""
    locks = sorted({lock_path(p): Path(p) for p in paths if p is not None}.items())
    taken: list[Path] = []
    try:
        for lock, what in locks:
            key = str(lock)
            if key in _held:
                _held[key][1] += 1
            else:
                _held[key] = [_acquire(lock, what, note), 1]
            taken.append(lock)
        yield
    finally:
        with deferred_interrupts():
            for lock in reversed(taken):
                entry = _held[str(lock)]
                entry[1] -= 1
                if entry[1] == 0:
                    del _held[str(lock)]
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(lock)   # while still held: a waiter then sees its file is gone and retries
                    os.close(entry[0])


# --- staged writes ----------------------------------------------------------------------------------------------

class Staging:
    """The scratch folder of one run: `path(dest)` is where `dest` is written until it is published."""

    def __init__(self, folder: Path):
        self.folder = folder

    def path(self, dest: str | Path) -> Path:
        return self.folder / Path(dest).name


def publish(moves: list[tuple[Path, Path]]) -> None:
    """Rename each (staged, destination) in order, Ctrl-C deferred; staged files that are absent are skipped (a
    stage the run reused). Each file reaches the disk before its rename, so the rename never publishes a file the
    disk does not have in full after a power loss."""
    present = [(src, dest) for src, dest in moves if src.exists()]
    mode = 0o666 & ~_umask()
    for src, _ in present:
        os.chmod(src, mode)
        with open(src, "rb") as f:
            os.fsync(f.fileno())
    with deferred_interrupts():
        for src, dest in present:
            os.replace(src, dest)
    folders = {dest.parent for _, dest in present}
    for folder in folders:
        with contextlib.suppress(OSError):
            fd = os.open(folder, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


@contextlib.contextmanager
def staged_outputs(*artifacts: str | Path, extra: Iterable[str | Path] = (), locks: Iterable[str | Path | None] = (),
                   inputs: Iterable[str | Path | None] = (), option: str = "-o",
                   note: Callable[[str], None] = lambda message: None) -> Iterator[Staging]:
    """Check `artifacts` (one folder), lock them (and `locks`), and yield a Staging in a scratch folder beside them.
    Write each artifact, its manifest and any `extra` file (e.g. a calibration cache) at `staging.path(dest)`.
    On success they are published: the artifacts in the order given, the extra files, then the manifests in the same
    order, the last one being the commit point (a stage the run reused has no staged file and is left alone). On
    any failure or Ctrl-C nothing is published and the scratch folder, the lock files and any folder this run created
    are removed."""
    artifacts = [Path(a) for a in artifacts]
    extra = [Path(e) for e in extra]
    folder = artifacts[0].absolute().parent
    if any(p.absolute().parent != folder for p in artifacts + extra):
        raise ValueError("staged outputs must share one folder")
    check_outputs(*artifacts, *map(manifest_path, artifacts), *extra, inputs=inputs, option=option)
    created = _make_folder(folder)
    try:
        with locked(*artifacts, *locks, note=note):
            scratch = Path(tempfile.mkdtemp(prefix=SCRATCH_PREFIX, dir=folder))
            try:
                staging = Staging(scratch)
                yield staging
                order = [*artifacts, *extra, *map(manifest_path, artifacts)]
                publish([(staging.path(dest), dest) for dest in order])
            finally:
                with deferred_interrupts():
                    shutil.rmtree(scratch, ignore_errors=True)
    except BaseException:
        with deferred_interrupts():
            _remove_folders(created)
        raise


@contextlib.contextmanager
def atomic_output(dest: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `dest`; on success it replaces `dest`, on any error (Ctrl-C included) it is
    removed. For a single file with no manifest; an artifact and its manifest go through staged_outputs.

    The file gets the permissions any new file gets (0666 less the umask), not mkstemp's private 0600.
    """
    dest = Path(dest)
    created = _make_folder(dest.absolute().parent)
    prefix = hidden_name(dest.name, ".", name_max(dest.absolute().parent) - 16)   # mkstemp adds 8 + ".tmp"
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=dest.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():
            os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, dest)
    except BaseException:
        with deferred_interrupts():
            tmp_path.unlink(missing_ok=True)
            _remove_folders(created)
        raise


def write_json(dest: str | Path, data: dict) -> Path:
    with atomic_output(dest) as tmp:
        tmp.write_text(strict_json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    return Path(dest)


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
