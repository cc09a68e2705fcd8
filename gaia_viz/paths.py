"""Which server paths may be read, how folders are walked, and how user text is echoed.

One question has one answer here: :func:`check_allowed` says whether a path may be read
(returning it resolved) or raises a :class:`~gaia_viz.errors.DataError` that says what to do.
The CLI, the library's folder walk and the app all ask it.

**When paths are restricted.** On a laptop (the app served on 127.0.0.1, or the CLI) that
is the user's own machine and every path may be read. Paths are restricted when

* ``$GAIA_VIZ_ALLOWED_ROOTS`` is set (in any entry point, the CLI included), or
* this code runs inside a Streamlit server whose ``server.address`` is not a loopback
  address (unset counts as not loopback: Streamlit then listens on every interface).

**What a restricted path may be.** It must resolve (``~``, ``..`` and symlinks followed)
under an *allowed root*: the data root (:func:`gaia_viz.settings.data_root`) and the folders
listed in ``$GAIA_VIZ_ALLOWED_ROOTS`` (``os.pathsep``-separated; the server user's home only
when listed there). Below its root no component may be hidden (start with ``.``: ``.ssh``,
``.git``, ``.env``) unless ``$GAIA_VIZ_ALLOW_HIDDEN`` is ``1``.

**Text checks, always.** Paths holding NUL or other control characters, a component longer
than the file system's ``PC_NAME_MAX`` or a whole path longer than ``PC_PATH_MAX`` are refused
up front, so the operating system never sees them.

**Folder walks** (:func:`walk_files`) visit every directory once, by its resolved identity
``(st_dev, st_ino)``, so symlink loops end; they stop with a DataError past ``max_files``
files or ``max_dirs`` folders; when restricted they refuse a link whose target is not allowed
before descending into it or reading it.

**Messages** name only what the user typed (never where a link leads), cut by :func:`echo`
to :data:`ECHO_LIMIT` characters.

This module imports no Streamlit; :func:`app_server_address` looks at Streamlit only when it
is already imported.
"""

from __future__ import annotations

import ipaddress
import os
import re
import stat
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from gaia_viz.errors import DataError
from gaia_viz.settings import ALLOWED_HIDDEN_ENV, ALLOWED_ROOTS_ENV, data_root

LOOPBACK_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost")
# what app_server_address reports outside a Streamlit server: the CLI and the library are local
LOCAL_ADDRESS = "127.0.0.1"
ECHO_LIMIT = 120
DEFAULT_MAX_FILES = 2_000_000  # ImageNet-1k train (1.28 M images) still fits
DEFAULT_MAX_DIRS = 100_000
# fallbacks where os.pathconf is unavailable (Windows): the common Linux values
FALLBACK_NAME_MAX = 255
FALLBACK_PATH_MAX = 4096
TRUE_WORDS = ("1", "true", "yes", "on")

# C0 and C1 control characters, DEL, and the Unicode line and paragraph separators
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
# what os.fsdecode makes of file-name bytes that are not UTF-8 (surrogateescape)
_UNDECODABLE = re.compile("[\udc80-\udcff]")


# --------------------------------------------------------------------------- user text


def printable(text: object) -> str:
    """``text`` (a str, a path, or a name as bytes) as text that can be shown and written as
    UTF-8: bytes of a file name that are not UTF-8 (which Python holds as lone surrogates,
    ``\\udcff``) written as ``\\xff``, as the file system holds them."""
    if isinstance(text, (bytes, bytearray)):
        text = os.fsdecode(bytes(text))
    elif isinstance(text, os.PathLike):
        text = os.fsdecode(os.fspath(text))
    return _UNDECODABLE.sub(lambda m: f"\\x{ord(m.group()) - 0xDC00:02x}", str(text))


def echo(text: object, limit: int = ECHO_LIMIT) -> str:
    """``text`` as a message may show it: control characters written as escapes (``\\x00``,
    ``\\n``), bytes that are not UTF-8 as ``\\xff`` (:func:`printable`), at most ``limit``
    characters (the rest replaced by ``…``)."""
    shown = _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), printable(text))
    return shown if len(shown) <= limit else shown[: limit - 1] + "…"


def check_text(text: str, what: str = "text") -> str:
    """``text`` unchanged, or DataError when it holds a control character (NUL, newline, ESC...)."""
    found = _CONTROL.search(text)
    if found:
        raise DataError(f"{what} {echo(text)} contains a control character "
                        f"({echo(found.group())}); type it without")
    return text


def _limits() -> tuple[int, int]:
    """(longest name, longest path) in bytes, as the root file system reports them."""
    try:
        return os.pathconf("/", "PC_NAME_MAX"), os.pathconf("/", "PC_PATH_MAX")
    except (AttributeError, OSError, ValueError):
        return FALLBACK_NAME_MAX, FALLBACK_PATH_MAX


def check_path_text(text: str, what: str = "path") -> str:
    """``text`` unchanged, or DataError when it is not a path this system can open: a control
    character, an undecodable character, a component over ``PC_NAME_MAX`` bytes or a whole
    path (after ``~`` is expanded) of ``PC_PATH_MAX`` bytes or more."""
    check_text(text, what)
    try:
        encoded = os.fsencode(os.path.expanduser(text))
    except UnicodeError:
        raise DataError(f"{what} {echo(text)} holds characters this system cannot use in a file name") from None
    name_max, path_max = _limits()
    if len(encoded) >= path_max:
        raise DataError(f"{what} {echo(text)} is {len(encoded):,} bytes long, more than this system "
                        f"allows ({path_max - 1:,}); give a shorter path")
    longest = max(encoded.split(os.fsencode(os.sep)), key=len)
    if len(longest) > name_max:
        raise DataError(f"{what} {echo(text)} has a name of {len(longest):,} bytes, more than this "
                        f"system allows ({name_max:,}); give a shorter name")
    return text


# --------------------------------------------------------------------------- served or local


def is_loopback(address: str | None) -> bool:
    """True for ``127.x.x.x``, ``::1`` and ``localhost``; False for None/empty (all interfaces)."""
    if not address:
        return False
    address = address.strip().strip("[]")
    if address.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def app_server_address() -> str | None:
    """Streamlit's ``server.address`` when a Streamlit server runs in this process (None when
    unset), else :data:`LOCAL_ADDRESS`: the CLI and the library never import Streamlit."""
    if "streamlit" not in sys.modules:
        return LOCAL_ADDRESS
    import streamlit
    from streamlit import runtime

    if not runtime.exists():  # streamlit imported (a notebook, a test) but nothing served
        return LOCAL_ADDRESS
    return streamlit.get_option("server.address")


def served() -> bool:
    """Whether this process serves the app beyond this machine (address not loopback)."""
    return not is_loopback(app_server_address())


# --------------------------------------------------------------------------- the policy

OUTSIDE = "outside"
HIDDEN = "hidden"


def _within(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


@dataclass(frozen=True)
class PathPolicy:
    """What may be read: ``roots`` None means every path (not restricted); otherwise resolved
    paths under one of ``roots``, hidden components below the root only if ``allow_hidden``."""

    roots: tuple[Path, ...] | None
    allow_hidden: bool = True

    @property
    def restricted(self) -> bool:
        return self.roots is not None

    def refusal(self, resolved: Path) -> str | None:
        """None when ``resolved`` may be read, else :data:`OUTSIDE` or :data:`HIDDEN`."""
        if self.roots is None:
            return None
        holding = [root for root in self.roots if _within(resolved, root)]
        if not holding:
            return OUTSIDE
        if self.allow_hidden:
            return None
        visible = any(not any(part.startswith(".") for part in resolved.relative_to(root).parts)
                      for root in holding)
        return None if visible else HIDDEN

    def describe(self) -> str:
        """One line (also a cache key: a result opened under one policy is not reused under another)."""
        if self.roots is None:
            return "every path"
        roots = ", ".join(map(str, self.roots)) or "none"
        return f"under {roots}" + ("" if self.allow_hidden else ", no hidden files")


def _configured_roots() -> list[Path]:
    configured = os.environ.get(ALLOWED_ROOTS_ENV, "").strip()
    return [Path(p.strip()).expanduser() for p in configured.split(os.pathsep) if p.strip()]


def path_policy() -> PathPolicy:
    """The policy in force now (see the module docstring)."""
    configured = _configured_roots()
    if not configured and not served():
        return PathPolicy(None)
    roots: list[Path] = []
    server_data_root = data_root()
    for candidate in ([server_data_root] if server_data_root is not None else []) + configured:
        resolved = Path(os.path.realpath(candidate))
        if resolved not in roots:
            roots.append(resolved)
    allow_hidden = os.environ.get(ALLOWED_HIDDEN_ENV, "").strip().lower() in TRUE_WORDS
    return PathPolicy(tuple(roots), allow_hidden)


def restriction_active() -> bool:
    """Whether paths are limited to :func:`allowed_roots` now."""
    return path_policy().restricted


def allowed_roots() -> list[Path]:
    """The allowed roots, resolved (empty when nothing is restricted: every path may be read)."""
    return list(path_policy().roots or ())


def _refused(what: str, typed: str, reason: str, policy: PathPolicy) -> DataError:
    if reason == HIDDEN:
        return DataError(f"{what} {echo(typed)} is hidden or lies in a hidden folder (a name starting "
                         f"with '.'), which this server does not read; choose another path, or set "
                         f"{ALLOWED_HIDDEN_ENV}=1 on the server")
    roots = ", ".join(map(str, policy.roots or ())) or "none"
    return DataError(f"{what} {echo(typed)} is outside the allowed data roots ({roots}); choose a path "
                     f"under one of them, or set {ALLOWED_ROOTS_ENV} on the server")


def _resolve(typed: str, what: str) -> Path:
    try:
        return Path(os.path.realpath(os.path.expanduser(typed)))
    except (OSError, RuntimeError, ValueError) as exc:
        raise DataError(f"{what} {echo(typed)} cannot be resolved ({type(exc).__name__}); "
                        "check the path") from None


def check_allowed(path: str | os.PathLike, what: str = "path", policy: PathPolicy | None = None) -> Path:
    """``path`` resolved (``~``, ``..``, symlinks), or DataError when it may not be read.

    Checks the text first (:func:`check_path_text`), then, when paths are restricted, the
    resolved path against the allowed roots and the hidden-name rule; reads nothing but the
    links on the way. The message names ``path`` as given (cut by :func:`echo`), prefixed by
    ``what``, never the place it resolves to.
    """
    typed = os.fsdecode(os.fspath(path))
    if not typed.strip():
        raise DataError(f"{what}: no path given; type the path")
    check_path_text(typed, what)
    resolved = _resolve(typed, what)
    policy = path_policy() if policy is None else policy
    reason = policy.refusal(resolved)
    if reason is not None:
        raise _refused(what, typed, reason, policy)
    return resolved


# --------------------------------------------------------------------------- capped reads


def size_refusal(cap: int, kind: str, setting: str) -> str:
    """"more than the 256 MB limit for an image file; ..." (``setting``: the environment
    variable that raises the cap), to follow a file's name and size in a message."""
    return (f"more than the {megabytes(cap)} limit for {kind}; use a smaller file, or set {setting} "
            "(megabytes) on the server to raise the limit")


def megabytes(size: int) -> str:
    """``4,295 MB``; ``1.2 MB`` under ten megabytes, ``0.001 MB`` under one."""
    if size >= 1e7:
        return f"{size / 1e6:,.0f} MB"
    return f"{size / 1e6:.1f} MB" if size >= 1e6 else f"{size / 1e6:.3g} MB"


def read_capped(path: str | os.PathLike, cap: int, *, what: str, kind: str, setting: str,
                error: type[Exception] = DataError) -> bytes:
    """The bytes of the file ``path``, refused with ``error`` when it holds more than ``cap``:
    a regular file by its size before reading, anything else (a pipe, a device, a file that
    grows) after ``cap`` bytes, so at most ``cap + 1`` bytes are ever held. An ``OSError``
    while opening or reading is raised as it is; ``what`` names the file in messages."""
    with open(path, "rb") as handle:
        info = os.fstat(handle.fileno())
        if stat.S_ISREG(info.st_mode) and info.st_size > cap:
            raise error(f"{what} is {megabytes(info.st_size)}, {size_refusal(cap, kind, setting)}")
        data = handle.read(cap + 1)
    if len(data) > cap:
        raise error(f"{what} holds {size_refusal(cap, kind, setting)}")
    return data


# --------------------------------------------------------------------------- folder walks


def walk_files(root: str | os.PathLike, want: Callable[[str], bool] = lambda name: True, *,
               max_files: int = DEFAULT_MAX_FILES, max_dirs: int = DEFAULT_MAX_DIRS,
               policy: PathPolicy | None = None, what: str = "folder") -> Iterator[Path]:
    """The regular files under ``root`` whose name passes ``want``, as paths spelled below
    ``root`` as given (``~`` expanded), in depth-first order of sorted names.

    Hidden entries (a name starting with ``.``) are skipped. Each directory is entered once,
    known by ``(st_dev, st_ino)`` after following links: a second way into the same folder (a
    symlink loop, ``all -> train``) is skipped: a folder keeps the path it was first seen by
    (the entries of a folder are seen before anything below them). More than
    ``max_files`` non-folder entries or ``max_dirs`` folders is a DataError, as is, when paths
    are restricted, a link whose target may not be read (found before following it). Folders
    that cannot be listed below ``root`` are skipped, as ``os.walk`` does.
    """
    policy = path_policy() if policy is None else policy
    typed = os.fsdecode(os.fspath(root))
    real_root = check_allowed(typed, what, policy)
    try:
        root_info = os.stat(real_root)
    except OSError:
        root_info = None
    if root_info is None or not stat.S_ISDIR(root_info.st_mode):
        raise DataError(f"{what} {echo(typed)} does not exist; check the path")
    lexical_root = Path(os.path.expanduser(typed))
    visited = {(root_info.st_dev, root_info.st_ino)}
    pending = [(lexical_root, real_root)]
    files_seen = 0
    dirs_seen = 1

    def too_many(count: int, kind: str, limit_name: str) -> DataError:
        return DataError(f"{what} {echo(typed)} holds more than {count:,} {kind}, the limit of one data "
                         f"set ({limit_name}={count:,}); choose a smaller folder")

    while pending:
        lexical, real = pending.pop()
        entries = []
        try:
            with os.scandir(real) as listing:
                for entry in listing:
                    entries.append(entry)
                    if len(entries) > max_files + max_dirs:
                        raise too_many(max_files, "files", "max_files")
        except OSError:
            if real == real_root:
                raise DataError(f"{what} {echo(typed)} cannot be listed; check its permissions") from None
            continue
        entries.sort(key=lambda e: e.name)
        subfolders = []
        for entry in entries:
            if entry.name.startswith("."):
                continue
            target = None  # where a link leads; a plain folder is ``real / name``
            try:
                if entry.is_symlink():
                    target = Path(os.path.realpath(entry.path))
                    reason = policy.refusal(target)
                    if reason is not None:
                        link = (lexical / entry.name).relative_to(lexical_root).as_posix()
                        where = ("outside the allowed data roots" if reason == OUTSIDE
                                 else "to a hidden file or folder (a name starting with '.')")
                        raise DataError(f"{what} {echo(typed)} holds a link ({echo(link)}) that leads {where}, "
                                        "which this server does not read; remove the link or choose another folder")
                is_folder = entry.is_dir()
                info = entry.stat() if is_folder else None
            except OSError:  # a dangling or looping link, a file gone meanwhile
                continue
            if is_folder:
                identity = (info.st_dev, info.st_ino)
                if identity in visited:
                    continue
                visited.add(identity)
                dirs_seen += 1
                if dirs_seen > max_dirs:
                    raise too_many(max_dirs, "folders", "max_dirs")
                subfolders.append((lexical / entry.name, target or real / entry.name))
                continue
            files_seen += 1
            if files_seen > max_files:
                raise too_many(max_files, "files", "max_files")
            try:
                regular = want(entry.name) and entry.is_file()
            except OSError:
                continue
            if regular:
                yield lexical / entry.name
        pending.extend(reversed(subfolders))


__all__ = ["DEFAULT_MAX_DIRS", "DEFAULT_MAX_FILES", "ECHO_LIMIT", "HIDDEN", "LOCAL_ADDRESS", "LOOPBACK_NAMES",
           "OUTSIDE", "PathPolicy", "allowed_roots", "app_server_address", "check_allowed", "check_path_text",
           "check_text", "echo", "is_loopback", "megabytes", "path_policy", "printable", "read_capped", "restriction_active",
           "served", "size_refusal", "walk_files"]
