"""Small file helpers shared by every stage: atomic writes, JSON/JSONL, the rejects log.

Outputs are written to a temporary file in the destination folder and renamed into place, so a
stopped run never leaves a half-written file that a resumed run would trust.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import multiprocessing
import os
import select
import signal
import sys
import tempfile
import threading
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path, PurePath
from typing import IO, Any

from usfmae.errors import DataError

log = logging.getLogger(__name__)

# the reject reason for such a name, the same in every stage (manifests, CSVs and ids are UTF-8 text)
NOT_UTF8_REASON = "file name is not valid UTF-8 (rename the file)"


def is_utf8(name: str | os.PathLike) -> bool:
    """True when a (file) name is valid UTF-8, i.e. holds no undecodable bytes (surrogate escapes)."""
    try:
        str(name).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def printable_name(name: str | os.PathLike) -> str:
    """``name`` with bytes that are not UTF-8 shown as ``\\xNN``: safe to print, log and store."""
    return os.fsencode(str(name)).decode("utf-8", "backslashreplace")


# Room under NAME_MAX (255 bytes on ext4, XFS, tmpfs) for what stages add to an id made from an input's
# name: a frame number, a suffix, and atomic_path's temporary ".NAME.XXXXXXXX.png".
NAME_BYTES = 200


def fit_name(name: str, limit: int = NAME_BYTES) -> str:
    """``name`` when it is at most ``limit`` bytes of UTF-8, else its start, ``~`` and a hash of all of it.

    Output files are named after input files, and file systems refuse names over 255 bytes: a
    250-byte input name stopped a whole ingest. The hash keeps long names that share their start
    apart, and the same name always gives the same result, so a resumed run finds its earlier outputs.
    """
    data = name.encode("utf-8", "surrogateescape")
    if len(data) <= limit:
        return name
    digest = hashlib.sha1(data).hexdigest()[:12]
    return data[:limit - len(digest) - 1].decode("utf-8", "ignore") + "~" + digest  # cut between characters


def unique_names(names: Sequence[str], keys: Sequence[str]) -> list[str]:
    """``names`` (one per input, in listing order) with every name claimed by several inputs made unique.

    Output names are derived from input paths by rules that can map two inputs to one name
    (``a.b.png`` and ``a_b.png`` both give ``a_b_png``), and the second output would silently
    overwrite the first. Every claimant of a shared name gets ``~`` and the first 8 hex digits of
    the SHA-1 of its key (its relative path) on the last ``/``-part, kept under :data:`NAME_BYTES` by
    :func:`fit_name`; in the astronomically rare case that this still collides, the full digest.
    Names claimed once are returned unchanged, so existing outputs keep their names, and a name
    depends only on the listing, not on which process or shard handles which input.

    Args:
        names: the plain name of each input.
        keys: what tells the inputs apart (their relative paths), aligned with ``names``.

    Returns:
        The names, aligned with ``names``, all distinct when the keys are.
    """
    def tagged(name: str, key: str, digits: int) -> str:
        head, slash, tail = name.rpartition("/")
        digest = hashlib.sha1(key.encode("utf-8", "surrogateescape")).hexdigest()[:digits]
        return head + slash + fit_name(f"{tail}~{digest}")

    if len(keys) != len(names):
        raise ValueError(f"{len(names)} names but {len(keys)} keys")
    counts = Counter(names)
    if len(counts) == len(names):  # the usual case: nothing shared, and no second pass over a big listing
        return list(names)
    result = [tagged(n, k, 8) if counts[n] > 1 else n for n, k in zip(names, keys, strict=True)]
    del counts
    counts = Counter(result)
    if len(counts) < len(result):  # a tag met a plain name or another tag
        result = [tagged(n, k, 40) if counts[r] > 1 else r for n, k, r in zip(names, keys, result, strict=True)]
    return result


def unsafe_id(item_id: str) -> str | None:
    """Why ``item_id`` cannot name output files under a run's folder, or None when it can.

    An id becomes a relative path (``images/<id>.png``): it must be non-empty UTF-8 text of
    ``/``-separated parts, none empty, ``.`` or ``..``, with no backslash, NUL or control character,
    and not absolute, so it can never point outside the output folder.
    """
    if not item_id:
        return "empty id"
    if not is_utf8(item_id):
        return "id is not valid UTF-8"
    if any(ord(c) < 32 or c == "\x7f" for c in item_id) or "\\" in item_id:
        return "id holds a control character or backslash"
    if item_id.startswith("/") or any(part in ("", ".", "..") for part in item_id.split("/")):
        return "id is not a plain relative name (absolute, '..', '.' or an empty part)"
    return None


class PathsUnder:
    """Files a manifest names, relative to ``base``, refused (``DataError``) where they leave it.

    Manifests name their files relative to their own folder; a path such as ``../../etc/passwd`` or
    ``/home/x`` (or a symlink out) would make a stage read any file. Symlinks are resolved. One
    instance serves one listing: each folder's real path is looked up once (a full ``realpath``
    per row cost ~45 us, 45 s for a million frames), and for a file only whether it is a link.

        under = PathsUnder(manifest.parent, allow_outside=False)
        path = under("frames/a.png")      # "<manifest folder>/frames/a.png"
    """

    def __init__(self, base: str | os.PathLike, allow_outside: bool = False) -> None:
        self.base = os.fspath(base)
        self.allow_outside = allow_outside
        self._real_base: str | None = None
        self._real_dirs: dict[str, str] = {}

    def _real(self, path: str) -> str:
        """``os.path.realpath(path)``, with the folders' part cached."""
        head, name = os.path.split(path)
        if name in ("", ".", ".."):
            return os.path.realpath(path)
        if head not in self._real_dirs:
            self._real_dirs[head] = os.path.realpath(head)
        real = os.path.join(self._real_dirs[head], name)
        return os.path.realpath(real) if os.path.islink(real) else real

    def __call__(self, relative: str) -> str:
        path = str(PurePath(self.base, relative))  # as ``Path(base) / relative`` spells it
        if self.allow_outside:
            return path
        if self._real_base is None:
            self._real_base = os.path.realpath(self.base)
        try:
            real = self._real(path)
            inside = os.path.commonpath([real, self._real_base]) == self._real_base
        except (OSError, ValueError):
            inside = False
        if not inside:
            raise DataError(f"{printable_name(relative)}: path leaves the manifest's folder (--allow-outside to accept)")
        return path


def ensure_output_dir(path: str | os.PathLike, lock: bool = True) -> Path:
    """Create the output folder ``path`` (and parents), or raise one clear ``DataError``; lock it.

    Catches the usual user mistakes up front: the path is a file, it cannot be created, or it is
    not writable, so a batch job fails before doing any work instead of at its first write. With
    ``lock`` (default) the folder is locked for the rest of the process (:func:`lock_output_dir`):
    a second run into it stops at once instead of mixing its files with this one's.
    """
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: exists and is not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"{out}: cannot create the output folder ({exc.strerror or exc})") from exc
    if not os.access(out, os.W_OK | os.X_OK):
        raise DataError(f"{out}: output folder is not writable")
    if lock:
        lock_output_dir(out)
    return out


LOCK_NAME = ".usfmae.lock"
_held: dict[str, int] = {}  # resolved folder -> open lock file descriptor of this process


def lock_output_dir(path: str | os.PathLike) -> None:
    """Hold an exclusive lock on output folder ``path`` until :func:`unlock_output_dir` or exit.

    The lock is ``flock`` on ``path/.usfmae.lock``, so the kernel drops it when the holder dies
    (a killed run leaves no stale lock); the file names the holder (pid, host, command) for the
    message. Re-entrant within a process (a verb that calls another stage into the same folder).

    Raises:
        DataError: another process holds the folder, in one line naming it.
    """
    import fcntl
    import socket
    import sys

    key = str(Path(path).resolve())
    if key in _held:
        return
    lock_path = Path(path) / LOCK_NAME
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise DataError(f"{path}: cannot create the lock file ({exc.strerror or exc})") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip() or "another process"
        os.close(fd)
        raise DataError(f"{path}: in use by another usfmae run ({holder}); wait for it to finish or "
                        "choose another output folder") from None
    command = " ".join(os.path.basename(a) if i == 0 else a for i, a in enumerate(sys.argv[:3]))
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}: {printable_name(command)}\n".encode(), 0)
    _held[key] = fd


def unlock_output_dir(path: str | os.PathLike) -> None:
    """Release this process's lock on ``path`` (no-op when it holds none)."""
    fd = _held.pop(str(Path(path).resolve()), None)
    if fd is not None:
        os.close(fd)  # closing the descriptor releases the flock


def reserve_space(path: str | os.PathLike) -> None:
    """Allocate the disk blocks of file ``path`` (its current size) now.

    A memory-mapped output is sparse until written; on a full disk the kernel then kills the writer
    with SIGBUS (no message, no cleanup). Allocating first turns that into an ``OSError`` (ENOSPC)
    before anything is written. No-op where the filesystem cannot (``posix_fallocate`` unsupported).
    """
    if not hasattr(os, "posix_fallocate"):
        return
    with open(path, "r+b") as handle:
        size = os.fstat(handle.fileno()).st_size
        try:
            os.posix_fallocate(handle.fileno(), 0, size)
        except OSError as exc:
            if exc.errno in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                return
            raise OSError(exc.errno, exc.strerror, str(path)) from None


def end_with_parent() -> None:
    """Make this (worker) process end (SIGTERM) when the process that started it dies (Linux; no-op
    elsewhere).

    A pool's workers otherwise outlive a parent killed with -9 and keep writing into its folder.
    Call it first thing in a worker initialiser. The kernel's parent-death signal (PR_SET_PDEATHSIG)
    follows the OS parent, which is not the pool's owner under the ``forkserver`` start method: there
    the workers are forks of the fork server, which itself waits for them (each holds its liveness
    pipe), so a killed owner left both running for ever. The owner (``multiprocessing.parent_process``)
    is therefore also watched through a pidfd by a daemon thread, woken by the kernel when it exits.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes  # only here: ctypes loads libffi

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() == 1:  # the parent died before the call: follow it now
        os.kill(os.getpid(), signal.SIGTERM)
    owner = multiprocessing.parent_process()
    if owner is None or owner.pid in (None, os.getppid()) or not hasattr(os, "pidfd_open"):
        return
    try:
        pidfd = os.pidfd_open(owner.pid)
    except ProcessLookupError:  # the owner is already gone
        os.kill(os.getpid(), signal.SIGTERM)
        return
    except OSError:  # no pidfd support (kernel < 5.3): the parent-death signal is all there is
        return

    def follow_owner() -> None:
        select.select([pidfd], [], [])  # readable once the owner has exited
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=follow_owner, name="end-with-parent", daemon=True).start()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` if the block succeeds.

    Use for writers that want a file name (``cv2.imwrite``, ``torch.save``, ``pq.write_table``).
    The temporary name keeps the final suffix so format detection by extension still works.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or path.suffix or ".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp creates 0600 files; give the output the permissions a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", **kwargs: Any) -> Iterator[IO]:
    """Open a temporary file for writing; it replaces ``path`` only when the block succeeds."""
    with atomic_path(path) as tmp, open(tmp, mode, **kwargs) as handle:
        yield handle


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_open(path, "w", encoding="utf-8") as handle:
        json.dump(obj, handle, indent=2, sort_keys=False, default=str)
        handle.write("\n")


def read_json(path: str | os.PathLike) -> Any:
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def append_jsonl(path: str | os.PathLike, record: dict) -> None:
    """Append one JSON record as a line (flushed, so a crash loses at most the current line).

    A last line torn by a killed writer (no newline) is closed first, so the new record stays on a
    line of its own instead of being glued onto the torn one and lost with it.
    """
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(record, default=str) + "\n").encode("utf-8")
    with open(path, "ab+") as handle:
        if handle.tell() > 0:
            handle.seek(-1, os.SEEK_END)
            if handle.read(1) != b"\n":
                line = b"\n" + line
        handle.write(line)
        handle.flush()


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Read a JSONL file; torn or garbled lines (a killed writer, a full disk) are skipped, and the
    records after them are kept."""
    records = []
    with open(path, "rb") as handle:
        for raw in handle:
            try:
                record = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError):
                if raw.strip():
                    log.debug("skipped a torn line in %s", path)
                continue
            if isinstance(record, dict):
                records.append(record)
    return records


class RejectLog:
    """The run's record of skipped inputs: one log line and one JSONL row per rejected file.

    Every batch stage (ingest, clean, pack, embed, ...) skips bad files instead of crashing and
    records them here, so the user can see what was left out and why.
    """

    def __init__(self, path: str | os.PathLike, logger: logging.Logger | None = None) -> None:
        self.path = Path(path)
        self.count = 0
        self._log = logger or log

    def reject(self, file: str | os.PathLike, reason: str, **extra: Any) -> None:
        """Record that ``file`` was skipped because of ``reason`` (one short sentence).

        A reason that starts with the file's name (a :class:`usfmae.errors.DataError` names its
        file) loses that prefix: the line says ``skipped FILE: reason`` once, not ``FILE: FILE: ...``.
        """
        self.count += 1
        reason = reason.removeprefix(f"{os.fspath(file)}: ")
        shown = printable_name(file)  # a name with undecodable bytes would break the log and the JSON
        self._log.warning("skipped %s: %s", shown, reason)
        append_jsonl(self.path, {"file": shown, "reason": reason, **extra})

    def read(self) -> list[dict]:
        return read_jsonl(self.path) if self.path.exists() else []
