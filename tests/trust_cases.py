"""Layouts for the directory-trust rule (src/ecr_kubelet/trust.py), each with the verdict it must get
from both copies of the rule: trust.py and the launcher's trusted_dir() (tests/test_trust.py).

A case is (id, layout, path, verdict). The layout is built, entry by entry, in a fresh directory
that root owns (mode 0755, every ancestor trusted) and `path` is asked for, relative to it, with
missing directories to be created. Layout entries:

    "name/ MODE [nobody]"          a directory (chmod MODE), another user's with "nobody"
    "name MODE [nobody]"           a regular file
    "name -> TARGET [nobody]"      a symbolic link; "{top}" in TARGET is the layout's directory

"trusted": the path resolves to a directory that is used; "refused": nothing is created or written.
"""

from __future__ import annotations

TRUSTED = "trusted"
REFUSED = "refused"

CASES: list[tuple[str, list[str], str, str]] = [
    # ---- the directory itself
    ("private directory", ["d/ 0700"], "d", TRUSTED),
    ("readable directory", ["d/ 0755"], "d", TRUSTED),
    ("trailing slashes", ["d/ 0700"], "d//", TRUSTED),
    ("group-writable directory", ["d/ 0770"], "d", REFUSED),
    ("directory writable by others only", ["d/ 0702"], "d", REFUSED),
    ("sticky world-writable directory", ["d/ 1777"], "d", REFUSED),
    ("sticky group-writable directory", ["d/ 1770"], "d", REFUSED),
    ("another user's directory", ["d/ 0700 nobody"], "d", REFUSED),
    ("regular file", ["f 0600"], "f", REFUSED),
    # ---- its ancestors
    ("group-writable parent", ["p/ 0770", "p/d/ 0700"], "p/d", REFUSED),
    ("world-writable parent", ["p/ 0777", "p/d/ 0700"], "p/d", REFUSED),
    ("parent writable by others only", ["p/ 0757", "p/d/ 0700"], "p/d", REFUSED),
    ("another user's parent", ["p/ 0755 nobody", "p/d/ 0700"], "p/d", REFUSED),
    ("group-writable grandparent", ["g/ 0775", "g/p/ 0755", "g/p/d/ 0700"], "g/p/d", REFUSED),
    ("another user's grandparent", ["g/ 0755 nobody", "g/p/ 0755", "g/p/d/ 0700"], "g/p/d", REFUSED),
    ("sticky world-writable parent, our entry", ["s/ 1777", "s/d/ 0700"], "s/d", TRUSTED),
    ("sticky group-writable parent, our entry", ["s/ 1770", "s/d/ 0700"], "s/d", TRUSTED),
    ("sticky parent writable by no one else", ["s/ 1755", "s/d/ 0700"], "s/d", TRUSTED),
    ("sticky parent, another user's entry", ["s/ 1777", "s/d/ 0700 nobody"], "s/d", REFUSED),
    ("sticky parent, another user's directory on the way", ["s/ 1777", "s/x/ 0755 nobody", "s/x/d/ 0700"], "s/x/d",
     REFUSED),
    ("another user's sticky parent", ["s/ 1777 nobody", "s/d/ 0700"], "s/d", REFUSED),
    ("a file on the way", ["f 0600"], "f/d", REFUSED),
    # ---- '.' and '..' resolve from what is resolved so far, as the kernel does
    ("'..' in the path", ["p/ 0755", "q/ 0700"], "p/../q", TRUSTED),
    ("'.' in the path", ["p/ 0755", "p/d/ 0700"], "p/./d", TRUSTED),
    ("'..' after a symlink goes up from its target", ["a/ 0755", "a/b/ 0755", "a/d/ 0700", "d/ 0777", "l -> a/b"],
     "l/../d", TRUSTED),
    # ---- missing directories: created (0700) in a directory that may hold our own entry
    ("missing directories under a trusted one", ["p/ 0755"], "p/a/b", TRUSTED),
    ("missing directory in a sticky world-writable one", ["s/ 1777"], "s/d", TRUSTED),
    ("missing directory in a world-writable one", ["p/ 0777"], "p/d", REFUSED),
    ("missing directory in a group-writable one", ["p/ 0770"], "p/d", REFUSED),
    ("missing directories under a group-writable one", ["g/ 0770"], "g/a/b", REFUSED),
    ("missing directory in another user's", ["p/ 0755 nobody"], "p/d", REFUSED),
    ("missing directories under another user's sticky one", ["s/ 1777", "s/x/ 0755 nobody"], "s/x/a/b", REFUSED),
    ("'..' in the part to create", ["p/ 0755"], "p/new/../d", REFUSED),
    ("'.' in the part to create", ["p/ 0755"], "p/new/./d", REFUSED),
    # ---- symbolic links: as trustworthy as the directory holding them, wherever they are met
    ("symlink in a trusted directory", ["real/ 0700", "l -> real"], "l", TRUSTED),
    ("symlink with an absolute target", ["real/ 0700", "l -> {top}/real"], "l", TRUSTED),
    ("another user's symlink in a trusted directory", ["real/ 0700", "l -> real nobody"], "l", TRUSTED),
    ("symlink to a symlink", ["real/ 0700", "l1 -> real", "l2 -> l1"], "l2", TRUSTED),
    ("symlink on the way", ["real/ 0755", "real/d/ 0700", "l -> real"], "l/d", TRUSTED),
    ("symlink in a world-writable directory", ["real/ 0700", "w/ 0777", "w/l -> ../real"], "w/l", REFUSED),
    ("symlink in a group-writable directory", ["real/ 0700", "g/ 0770", "g/l -> ../real"], "g/l", REFUSED),
    ("symlink on the way, in a world-writable directory", ["real/ 0755", "real/d/ 0700", "w/ 0777",
                                                           "w/l -> ../real"], "w/l/d", REFUSED),
    ("our symlink in a sticky directory", ["real/ 0700", "s/ 1777", "s/l -> ../real"], "s/l", TRUSTED),
    ("another user's symlink in a sticky directory", ["real/ 0700", "s/ 1777", "s/l -> ../real nobody"], "s/l",
     REFUSED),
    ("symlink to a directory in a world-writable one", ["w/ 0777", "w/real/ 0700", "l -> w/real"], "l", REFUSED),
    ("symlink on the way, to a directory in a world-writable one",
     ["w/ 0777", "w/real/ 0755", "w/real/d/ 0700", "l -> w/real"], "l/d", REFUSED),
    ("symlink to a world-writable directory", ["real/ 0777", "l -> real"], "l", REFUSED),
    ("symlink to another user's directory", ["real/ 0700 nobody", "l -> real"], "l", REFUSED),
    ("symlink to a file", ["f 0600", "l -> f"], "l", REFUSED),
    # A link that is on neither the path as written nor the path it resolves to still decides where
    # we go: a check of only those two paths would trust this.
    ("symlink chain through a world-writable directory", ["real/ 0700", "w/ 0777", "w/l1 -> ../real", "l2 -> w/l1"],
     "l2", REFUSED),
    ("symlink chain through a sticky directory, another user's link",
     ["real/ 0700", "s/ 1777", "s/l1 -> ../real nobody", "l2 -> s/l1"], "l2", REFUSED),
    ("dangling symlink: its target is created", ["l -> missing"], "l", TRUSTED),
    ("dangling symlink into a world-writable directory", ["w/ 0777", "l -> w/missing"], "l", REFUSED),
    ("symlink loop", ["l -> l"], "l", REFUSED),
]
