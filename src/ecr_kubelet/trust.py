"""Which directories root may keep files in: the one rule, for every directory we write on the node.

Root writes the token cache (live registry passwords) and the metrics file on every node, and the
launcher unpacks there the program it then runs. Each must be a directory that no one but root and
us (the effective uid) can change, now or later: otherwise another user could swap it for one of
their own, or choose where we write. The rule:

1. The path is absolute.
2. It is resolved one component at a time, as the kernel would: a symbolic link is followed (its
   target resolved the same way, from its own directory; at most 40 links), '..' goes up from what
   is resolved so far. Everything met on the way is checked:
   a. each directory is owned by root or us (and anything else where a directory is needed, such
      as a file, is refused);
   b. each directory we look into is not writable by group or others, except a sticky one (like
      /tmp) when the entry we look at in it, directory or link, is owned by root or us: others can
      add entries to a sticky directory but not rename or remove ours;
   c. so a link, which only the owners of its directory can replace, is as trustworthy as that
      directory; a link met anywhere (also inside another link's target) in a directory others may
      change would let them choose where we go.
3. The directory itself is not writable by group or others, sticky or not. The one exception is a
   directory we only create our own entry in (the launcher's mkdtemp() parent, such as /tmp),
   which may be sticky as in 2b.
4. A missing component is refused, unless we are to create the directory: then '.' or '..' in the
   part still to resolve is refused, and the component is created (mode 0700) in the directory
   resolved so far, which may be sticky as in 2b since our own entry comes next, and checked by
   rule 2 like any other (an entry someone else made first is refused). Nothing is created in a
   directory that is refused.
5. What cannot be checked (lstat or readlink fails other than for a missing component) is refused.

Afterwards only the resolved path is used: only root or we can change any directory on it, so it
names the same directory for as long as we use it.

The launcher keeps its own copy in C (packaging/launcher.c, trusted_dir), since it runs before
Python; tests/test_trust.py runs one table of layouts (tests/trust_cases.py) against both and
requires the same verdict. Standard library only, and cheap to import: this runs on every cache hit.
"""

from __future__ import annotations

import os
import stat

_OTHERS_WRITE = stat.S_IWGRP | stat.S_IWOTH
_MAX_LINKS = 40  # as Linux's MAXSYMLINKS


class Untrusted(Exception):
    """The directory could be changed by someone other than root or us; the message says where."""


def trusted_directory(path: str, *, create: bool = False) -> str:
    """The resolved path of `path` once the rule above holds for it (created first when `create`); else Untrusted."""
    if not path.startswith("/"):
        raise Untrusted(f"{path} is not an absolute path")
    euid = os.geteuid()
    pending = _components(path)  # a stack: the next component last
    real, info = "/", _directory("/", euid)
    links = 0
    while pending:
        name = pending.pop()
        if name == ".":
            continue
        if name == "..":
            real = os.path.dirname(real)
            info = _directory(real, euid)
            continue
        entry = real + name if real == "/" else f"{real}/{name}"
        try:
            child = os.lstat(entry)
        except FileNotFoundError:
            child = _create(path, entry, real, info, pending, create)
        except OSError as exc:
            raise Untrusted(f"{entry}: {exc.strerror}") from None
        _may_hold(real, info, child, euid)
        if stat.S_ISLNK(child.st_mode):
            links += 1
            if links > _MAX_LINKS:
                raise Untrusted(f"{path}: too many levels of symbolic links")
            try:
                target = os.readlink(entry)
            except OSError as exc:
                raise Untrusted(f"{entry}: {exc.strerror}") from None
            if target.startswith("/"):
                real, info = "/", _directory("/", euid)
            pending += _components(target)
            continue
        _check_directory(entry, child, euid)
        real, info = entry, child
    _may_hold(real, info, None, euid)
    return real


def _components(path: str) -> list[str]:
    """The components of `path` as a stack: the first one last."""
    return [name for name in reversed(path.split("/")) if name]


def _create(path: str, entry: str, parent: str, info: os.stat_result, pending: list[str],
            create: bool) -> os.stat_result:
    """Rule 4: the missing `entry`, created in its trusted `parent`."""
    if not create:
        raise Untrusted(f"{entry} does not exist")
    if "." in pending or ".." in pending:
        raise Untrusted(f"{path}: '.' or '..' in a path to create")
    _may_hold(parent, info, None, os.geteuid(), ours_next=True)
    try:
        os.mkdir(entry, 0o700)
    except FileExistsError:
        pass  # made by someone else meanwhile: checked like ours
    except OSError as exc:
        raise Untrusted(f"cannot create {entry}: {exc.strerror}") from None
    try:
        return os.lstat(entry)
    except OSError as exc:
        raise Untrusted(f"{entry}: {exc.strerror}") from None


def _directory(path: str, euid: int) -> os.stat_result:
    try:
        info = os.lstat(path)
    except OSError as exc:
        raise Untrusted(f"{path}: {exc.strerror}") from None
    _check_directory(path, info, euid)
    return info


def _check_directory(path: str, info: os.stat_result, euid: int) -> None:
    """Rule 2a."""
    if not stat.S_ISDIR(info.st_mode):
        raise Untrusted(f"{path} is not a directory")
    if info.st_uid not in (0, euid):
        raise Untrusted(f"{path} is owned by uid {info.st_uid}, not root or {euid}")


def _may_hold(path: str, info: os.stat_result, child: os.stat_result | None, euid: int, *,
              ours_next: bool = False) -> None:
    """Rules 2b and 3: the directory at `path` may hold `child` (None: it is the directory we want,
    or, with `ours_next`, the one we create our own entry in)."""
    if not info.st_mode & _OTHERS_WRITE:
        return
    sticky = bool(info.st_mode & stat.S_ISVTX)
    if sticky and (ours_next if child is None else child.st_uid in (0, euid)):
        return
    whose = " and its entry on our path is not root's or ours" if sticky and child is not None else ""
    raise Untrusted(f"{path} is writable by group or others (mode {stat.S_IMODE(info.st_mode):04o}){whose}")
