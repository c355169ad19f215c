"""Writing artifacts: checked before any work, locked while a run writes them, staged under temporary names and
published together.

- `check_outputs`: an output is a regular file or absent, not an input of the run, in a folder this process can
  write (tried, not only asked: root passes os.access on a read-only mount), with a name the file system takes.
  Anything else is one InputError before the run starts.
- `locked`: an advisory fcntl lock per output (`.NAME.lock` beside it, removed when released), so runs writing the
  same file take turns instead of interleaving their renames.
- `staged_outputs`: every file of a run is written into a scratch folder beside its destination, then renamed into
  place in one go, each manifest after its artifact and the last manifest as the commit point. A full disk there is
  one NoSpaceError naming the output and the space left, with nothing published.
- What a killed run (SIGKILL, out of memory, power loss) leaves, a scratch folder (staged_outputs',
  atomic_output's, publish_files') or a lock file, is removed by the next run that writes in that folder: each is
  held (flock) by its run while in use, so a free one has lost its owner. The lock dies with its holder, however it
  dies, and cannot be inherited by a process that reuses its pid, so no pid is recorded or checked.

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
import time
from pathlib import Path
from typing import Callable, Iterable, Iterator

from . import strict_json
from .errors import InputError, NoSpaceError

MANIFEST_SUFFIX = ".json"
NAME_MAX = 255            # when the file system does not say (pathconf)
SCRATCH_PREFIX = ".refiner-edge-"
SCRATCH_OWNER = ".owner"  # made once the scratch folder is held: a held-then-free folder is a killed run's
LOCK_MARK = b"refiner-edge lock\n"   # written into a lock file once held: only such files are swept
UNMARKED_STALE_S = 24 * 3600   # a scratch folder never held (killed at birth, or an older release's) after a day
PROBE_STALE_S = 60             # a write probe (check_outputs) left by a killed run
NO_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)   # full disk, full quota, file size limit (ulimit -f)
_held: dict[str, list] = {}   # lock path -> [fd, count]: a run that holds a lock may take it again (the chain's stages)
_swept: set[Path] = set()     # folders atomic_output has swept in this process


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
    a run's files and the clean-up after a failure, which take microseconds and must not stop half-way, and for
    ONNX Runtime runs of Python ops (onnx/session.py). A Python handler, not a signal mask: the C-level signal may
    land on any thread (ONNX Runtime's, torch's)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    # a signal this process ignores stays ignored: `nohup` and a script's `cmd &` ask for exactly that
    previous = {s: signal.signal(s, lambda signum, frame: received.append(signum))
                for s in (signal.SIGINT, signal.SIGTERM) if signal.getsignal(s) is not signal.SIG_IGN}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if received:
            raise KeyboardInterrupt


# --- a folder of files published entry by entry (deploy's model repository, DeepStream folder) ---------------

def publish_files(out: Path, files: dict[str, str | Path], folders: list[str] = ()) -> None:
    """Write {relative path: text, or a Path to copy} (and empty `folders`) into a temporary folder beside `out`,
    then move each top-level entry into `out` (see _publish_entries); nothing half-written is ever left in `out`, and
    folders this call created are removed again when it fails."""
    check_not_replaced(out, files, folders)
    created = make_folder(out.absolute()) if not out.is_file() else []
    try:
        # in a held scratch folder beside `out` (not in it: Triton polls a model repository), swept like any other
        # when a killed run leaves it
        parent = out.absolute().parent
        sweep(parent)
        with scratch_folder(parent) as scratch:
            tmp = scratch / out.name
            tmp.mkdir()
            for folder in folders:
                (tmp / folder).mkdir(parents=True)
            for rel, content in files.items():
                dest = tmp / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                if isinstance(content, Path):
                    shutil.copyfile(content, dest)
                else:
                    dest.write_text(content, encoding="utf-8")
            _publish_entries(tmp, out, aside=scratch)
    except BaseException:
        remove_folders(created)   # only the empty ones: what was published stays
        raise


def check_not_replaced(out: Path, files: dict[str, str | Path], folders: list[str]) -> None:
    """Refuse when a file this run reads (a copied artifact, its manifest, the plugin library) lies in an entry of
    `out` that publishing replaces whole (a model folder, a config file): it would be deleted with the old entry.
    A file published onto itself (an engine already in its DeepStream folder) is no loss and passes."""
    def real(path: Path) -> Path:
        return Path(os.path.realpath(path))

    entries = {real(out / rel.split("/")[0]): files.get(rel) for rel in [*files, *folders]}
    for source in [content for content in files.values() if isinstance(content, Path)]:
        for read in (source, manifest_path(source)):
            where = real(read)
            for entry, content in entries.items():
                inside = entry in where.parents
                replaced = where == entry and not (isinstance(content, Path) and real(content) == where)
                if read.exists() and (inside or replaced):
                    raise InputError(f"{read} lies in {entry}, which this run replaces: copy it elsewhere first, "
                                     "or choose another -o or --name")


def _publish_entries(tmp: Path, out: Path, aside: Path) -> None:
    """Move each finished entry of `tmp` (a model folder, a file) into the folder `out`, each atomically: an earlier
    entry of the same name is moved aside first (into `aside`, the run's scratch folder, so a kill leaves it where
    the next run sweeps it) and removed after. Everything else in `out` stays: a model repository holds other
    models, a DeepStream folder the user's own files."""
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    for entry in sorted(tmp.iterdir()):
        dest = out / entry.name
        old = None
        if dest.exists() or dest.is_symlink():
            old = aside / f".{dest.name}.old"
            try:
                os.replace(dest, old)
            except OSError as e:
                if e.errno != errno.EXDEV:
                    raise
                old = dest.with_name(f".{dest.name}.old-{os.getpid()}")   # `out` is a mount point of its own
                os.replace(dest, old)
        try:
            os.replace(entry, dest)
        except BaseException:
            if old is not None:
                os.replace(old, dest)
            raise
        if old is not None and old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        elif old is not None:
            old.unlink()


# --- checks before any work ---------------------------------------------------------------------------------------

_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"))


class _ReadSet:
    """The files a run reads, by identity: (device, inode) for those that exist (a hard link or a symlink is the same
    file), the resolved path for those that do not. Built once, so checking n outputs against n inputs (preprocess
    of a folder) stays linear."""

    def __init__(self, inputs: Iterable[str | Path | None]):
        self.inodes: dict[tuple[int, int], str] = {}
        self.paths: dict[str, str] = {}
        for path, what in read_paths(inputs):
            try:
                st = os.stat(path)
                self.inodes.setdefault((st.st_dev, st.st_ino), what)
            except OSError:
                self.paths.setdefault(os.path.realpath(path), what)

    def find(self, path: Path, st: os.stat_result | None) -> str | None:
        if st is not None:
            return self.inodes.get((st.st_dev, st.st_ino))
        return self.paths.get(os.path.realpath(path)) if self.paths else None


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


def read_paths(inputs: Iterable[str | Path | None]) -> list[tuple[Path, str]]:
    """What a run reads, as (path, how to name it): each input and, for a file, its manifest beside it, which the
    run reads too (a manifest overwritten by an output would describe another file)."""
    paths = []
    for given in inputs:
        if given is None:
            continue
        given = Path(given)
        paths.append((given, str(given)))
        if not given.is_dir():
            paths.append((manifest_path(given), f"the manifest of {given}"))
    return paths


def check_outputs(*outputs: str | Path | None, inputs: Iterable[str | Path | None] = (), option: str = "-o") -> None:
    """Refuse, before any work, an output that is not a regular file, is one of `inputs`, lies in a folder this
    process cannot write, or whose name (or its manifest's, which the caller lists) is longer than the file system
    allows. Missing folders are fine: they are created when the run publishes."""
    tried: set = set()
    inputs = _ReadSet(inputs)
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
        what = inputs.find(path, st)
        if what is not None:
            raise InputError(f"{option} {path} is also an input of this run ({what}): write to another file")
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


def make_folder(folder: Path) -> list[Path]:
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


def remove_folders(created: list[Path]) -> None:
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
                with contextlib.suppress(OSError):   # unmarked (a full disk) is only never swept
                    os.pwrite(fd, LOCK_MARK, 0)
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


def publish(moves: list[tuple[Path, Path]], remove: Iterable[Path] = ()) -> None:
    """Rename each (staged, destination) in order, Ctrl-C deferred; staged files that are absent are skipped (a
    stage the run reused). Then remove each of `remove` (an old manifest whose artifact was just replaced by one
    with none: left there, it would describe another file). Each file reaches the disk before its rename, so the
    rename never publishes a file the disk does not have in full after a power loss."""
    present = [(src, dest) for src, dest in moves if src.exists()]
    mode = 0o666 & ~_umask()
    for src, _ in present:
        os.chmod(src, mode)
        with open(src, "rb") as f:
            os.fsync(f.fileno())
    with deferred_interrupts():
        # artifacts before manifests, so a hard kill in between leaves a new file beside its old manifest, which
        # readers refuse (SHA-256 differs), never an old file that lost its manifest
        for src, dest in present:
            os.replace(src, dest)
        for dest in remove:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(dest)
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
                   inputs: Iterable[str | Path | None] = (), option: str = "-o", stale: Iterable[Path] = (),
                   note: Callable[[str], None] = lambda message: None) -> Iterator[Staging]:
    """Check `artifacts` (one folder), lock them (and `locks`), and yield a Staging in a scratch folder beside them.
    `stale`: files of the earlier generation that this one has no counterpart for, removed with the publish.
    Write each artifact, its manifest and any `extra` file (e.g. a calibration cache) at `staging.path(dest)`.
    On success they are published: the artifacts in the order given, the extra files, then the manifests in the same
    order, the last one being the commit point (a stage the run reused has no staged file and is left alone; an
    artifact published without a manifest loses the old one). On any failure or Ctrl-C nothing is published and the
    scratch folder, the lock files and any folder this run created are removed; a full disk is a NoSpaceError.
    What killed runs left in the folder (sweep) goes first."""
    artifacts = [Path(a) for a in artifacts]
    extra = [Path(e) for e in extra]
    folder = artifacts[0].absolute().parent
    if any(p.absolute().parent != folder for p in artifacts + extra):
        raise ValueError("staged outputs must share one folder")
    check_outputs(*artifacts, *map(manifest_path, artifacts), *extra, inputs=inputs, option=option)
    order = [*artifacts, *extra, *map(manifest_path, artifacts)]
    created = make_folder(folder)
    try:
        with locked(*artifacts, *locks, note=note):
            sweep(folder)
            # the space left is measured once the scratch folder is gone: what the user has to work with
            with out_of_space(order, artifacts[-1]), scratch_folder(folder) as scratch:
                staging = Staging(scratch)
                yield staging
                bare = [manifest_path(a) for a in artifacts
                        if staging.path(a).exists() and not staging.path(manifest_path(a)).exists()]
                publish([(staging.path(dest), dest) for dest in order], remove=[*bare, *stale])
    except BaseException:
        with deferred_interrupts():
            remove_folders(created)
        raise


@contextlib.contextmanager
def scratch_folder(folder: str | Path) -> Iterator[Path]:
    """A scratch folder in `folder` (`.refiner-edge-XXXX`), held (flock) while the run uses it and removed after,
    so that sweep can tell one a killed run left (free) from one in use."""
    scratch = Path(tempfile.mkdtemp(prefix=SCRATCH_PREFIX, dir=folder))
    fd = None
    try:
        fd = os.open(scratch, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.close(os.open(scratch / SCRATCH_OWNER, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))
        yield scratch
    finally:
        with deferred_interrupts():
            shutil.rmtree(scratch, ignore_errors=True)
            if fd is not None:
                os.close(fd)


def sweep(folder: str | Path) -> None:
    """Remove what killed runs left in `folder`: scratch folders (held by their run while in use) and lock files
    (held while a run writes) that no live process holds. Taking a lock file's lock and unlinking it is what a
    finishing run does anyway, and a run about to take it retries on the new file (_acquire)."""
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return
    for entry in entries:
        with contextlib.suppress(OSError):
            if entry.name.startswith(SCRATCH_PREFIX) and entry.is_dir(follow_symlinks=False):
                _sweep_scratch(Path(entry.path))
            elif entry.name.startswith(SCRATCH_PREFIX) and entry.is_file(follow_symlinks=False):
                # _check_writable's probe, which lives for microseconds: one a minute old lost its run
                if time.time() - entry.stat(follow_symlinks=False).st_mtime > PROBE_STALE_S:
                    os.unlink(entry.path)
            elif entry.name.startswith(".") and entry.name.endswith(".lock") and \
                    entry.is_file(follow_symlinks=False):
                _sweep_lock(Path(entry.path))


def _sweep_scratch(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return   # a live run's
        # no owner mark: made a moment ago by a run about to hold it, unless it is old
        if (path / SCRATCH_OWNER).exists() or time.time() - os.fstat(fd).st_mtime > UNMARKED_STALE_S:
            shutil.rmtree(path, ignore_errors=True)
    finally:
        os.close(fd)


def _sweep_lock(path: Path) -> None:
    if str(path.absolute()) in _held:
        return
    fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        if os.pread(fd, len(LOCK_MARK) + 1, 0) != LOCK_MARK:
            return   # not one of ours, or not yet held
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return
        mine = os.fstat(fd)
        now = os.stat(path)
        if (now.st_dev, now.st_ino) == (mine.st_dev, mine.st_ino):
            os.unlink(path)
    finally:
        os.close(fd)


# --- a full disk ------------------------------------------------------------------------------------------------

def public_path(path: str | Path) -> Path:
    """Where a file written under a temporary name is published: out of its scratch folders (the chain's stages
    nest one in another; a deploy folder is made whole in one, under its own name)."""
    parts = list(Path(path).absolute().parts)
    return Path(*[part for part in parts[:-1] if not part.startswith(SCRATCH_PREFIX)], parts[-1])


def _size(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    return ""


def space_left(folder: str | Path, error: int = errno.ENOSPC) -> str:
    """The free space where `folder` is (the file size limit too, when that is what stopped the write)."""
    folder = Path(folder)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        text = f"{_size(shutil.disk_usage(folder).free)} free in {folder}"
    except OSError:
        text = f"free space in {folder} unknown"
    if error == errno.EFBIG:
        import resource

        limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
        if limit != resource.RLIM_INFINITY:
            text += f"; this process may write files of at most {_size(limit)} (ulimit -f)"
    return text


def no_space_error(dest: str | Path, e: OSError) -> NoSpaceError:
    dest = public_path(dest)
    return NoSpaceError(f"cannot write {dest}: {e.strerror or os.strerror(e.errno)} "
                        f"({space_left(dest.parent, e.errno)})")


@contextlib.contextmanager
def out_of_space(dests: list[Path], default: Path) -> Iterator[None]:
    """A full disk (quota, file size limit) while writing `dests` -> one NoSpaceError naming the one being written
    (by its name in the scratch folder; else `default`) and the space left."""
    try:
        yield
    except OSError as e:
        if e.errno not in NO_SPACE:
            raise
        name = Path(os.fsdecode(e.filename)).name if e.filename else None
        dest = next((d for d in dests if d.name == name), default)
        raise no_space_error(dest, e) from None


@contextlib.contextmanager
def atomic_output(dest: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `dest` (in a scratch folder, so a killed run's is swept like any other); on
    success it replaces `dest`, on any error (Ctrl-C included) it is removed. For a single file with no manifest; an
    artifact and its manifest go through staged_outputs.

    The file gets the permissions any new file gets (0666 less the umask), not a temporary file's private 0600.
    """
    dest = Path(dest)
    folder = dest.absolute().parent
    created = make_folder(folder)
    try:
        if folder not in _swept:   # once per folder and process: preprocess writes thousands of files in one
            _swept.add(folder)
            sweep(folder)
        with out_of_space([dest], dest), scratch_folder(folder) as scratch:
            tmp_path = scratch / (dest.name if dest.name != SCRATCH_OWNER else "_")
            os.close(os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
            yield tmp_path
            if tmp_path.exists():
                os.chmod(tmp_path, 0o666 & ~_umask())
            os.replace(tmp_path, dest)
    except BaseException:
        with deferred_interrupts():
            remove_folders(created)
        raise


def write_json(dest: str | Path, data: dict) -> Path:
    with atomic_output(dest) as tmp:
        tmp.write_text(strict_json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    return Path(dest)


# --- hashing ----------------------------------------------------------------------------------------------------

_digests: dict[tuple, str] | None = None   # file identity and state -> SHA-256, while a command hashes once


@contextlib.contextmanager
def hashing_once() -> Iterator[None]:
    """Within the block (one command: cli/common.py; the build chain), file_sha256 reads each file once, though
    manifests written and verified and each stage's chain key ask for the same SHA-256 several times. A file is
    known by its device, inode, size and modification time: one replaced (a new inode) or written to since (a new
    time or size) is read again, one renamed into place or given its permissions (publish) is not. Outside a block
    nothing is remembered: a file changed in place within the file system's timestamp granularity (milliseconds)
    keeps its key, and only a command's own writes, which go to new files, are trusted not to do that."""
    global _digests
    if _digests is not None:
        yield
        return
    _digests = {}
    try:
        yield
    finally:
        _digests = None


def file_sha256(path: str | Path) -> str:
    with open(path, "rb") as f:
        if _digests is None:
            return _sha256(f)
        st = os.fstat(f.fileno())
        key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        digest = _digests.get(key)
        if digest is None:
            digest = _digests[key] = _sha256(f)
        return digest


def known_sha256(path: str | Path, digest: str) -> None:
    """Within hashing_once, take `digest` as the SHA-256 of `path` as it is now: a file this command's own child
    process wrote and hashed (the chain's export)."""
    if _digests is not None:
        st = os.stat(path)
        _digests[(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)] = digest


def _sha256(f) -> str:
    h = hashlib.sha256()
    for chunk in iter(lambda: f.read(1 << 20), b""):
        h.update(chunk)
    return h.hexdigest()
