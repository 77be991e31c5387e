"""Names of what dcsm writes: safe, portable file and folder names from image and class names.

Image file names and class names come from users and from model files, so neither may choose
where dcsm writes. :func:`safe_name` is the one rule every output name goes through (an image's
output folder, a class's picture, a member of ``maps.npz``): the name it returns is a single
path component that is never ``.``, ``..``, empty or hidden, holds no path separator, control
or format character, none of the characters Windows forbids (``< > : " / \\ | ? *``), does not
end in a dot or a space, is not a device name Windows reserves (``CON``, ``PRN``, ``AUX``,
``NUL``, ``COM0``-``COM9``, ``LPT0``-``LPT9``, ``CONIN$``, ``CONOUT$``, with any extension and
in any case) and is at most :data:`MAX_NAME_BYTES` bytes of UTF-8. Ordinary names pass
unchanged (``"tiger cat"``, ``"IMG 0001"``, ``"naïve"``), so outputs keep the names people
expect.

:func:`unique_names` makes the names of one folder distinct without regard to case (``"Cat"``
and ``"cat"`` are one file on macOS and Windows) and away from the names dcsm itself writes
there (``figure.png`` against a class named ``"Figure"``), by numbering later ones ``-2``,
``-3``, ...; :func:`output_names` names the output folders of a list of input images (as
``dcsm explain`` and ``dcsm batch`` do) and :func:`npz_keys` the arrays of ``maps.npz``.
"""

from __future__ import annotations

import re
import unicodedata
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from pathlib import PurePosixPath

__all__ = ["MAX_NAME_BYTES", "RESERVED_DEVICE_NAMES", "fold", "is_safe_name", "npz_keys",
           "output_names", "safe_name", "unique_names"]

#: The longest name :func:`safe_name` returns, in bytes of UTF-8: room is left under the
#: common 255-byte limit for a suffix, a ``-N`` number and dcsm's temporary names
#: (``.<name>.partial-<12 hex digits>``).
MAX_NAME_BYTES = 150

#: Device names Windows reserves whatever the extension (compared without regard to case).
RESERVED_DEVICE_NAMES = frozenset(
    {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"}
    | {f"{dev}{n}" for dev in ("COM", "LPT") for n in "0123456789\u00b9\u00b2\u00b3"}
)

# Characters no name may hold: path separators and what Windows forbids in a name.
_FORBIDDEN = frozenset('/\\<>:"|?*')
# Unicode categories replaced: control, format (bidirectional overrides, zero-width),
# surrogates (undecodable bytes of a file name), line and paragraph separators.
_REPLACED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
# Trailing characters Windows drops from a name (so "a." and "a" would be one file).
_TRAILING = " ."
_FALLBACK = "unnamed"


def _clean_char(c: str) -> str:
    if c in _FORBIDDEN or unicodedata.category(c) in _REPLACED_CATEGORIES:
        return "_"
    return c


def _truncate(name: str, limit: int) -> str:
    """``name`` cut to at most ``limit`` bytes of UTF-8, at a character boundary."""
    data = name.encode("utf-8")
    if len(data) <= limit:
        return name
    return data[:limit].decode("utf-8", errors="ignore")


def _is_device(name: str) -> bool:
    """Whether Windows takes ``name`` for a device: the part before the first dot, trailing
    spaces dropped, is a reserved device name."""
    return name.split(".", 1)[0].rstrip(" ").upper() in RESERVED_DEVICE_NAMES


def safe_name(name: str) -> str:
    """A safe, portable file or folder name for ``name`` (an image stem, a class name).

    The rule (the module docstring says what it guarantees): the name is put in Unicode
    normal form NFC; every path separator, character Windows forbids in names (``< > : " | ?
    *``) and control or format character (NUL, tab, newline, escape, bidirectional overrides)
    becomes ``_``; spaces at either end and dots at the end are dropped; a name starting with a
    dot gets a ``_`` in front (so it is neither hidden nor ``.``/``..``); a name longer than
    :data:`MAX_NAME_BYTES` bytes is cut; a reserved Windows device name gets a ``_`` after its
    first part (``CON`` -> ``CON_``, ``aux.tar.gz`` -> ``aux_.tar.gz``); an empty result is
    ``"unnamed"``. A name already safe is returned unchanged, so
    ``safe_name(safe_name(x)) == safe_name(x)``.
    """
    text = unicodedata.normalize("NFC", str(name))
    text = "".join(_clean_char(c) for c in text)
    text = text.strip().rstrip(_TRAILING).strip()
    if text.startswith("."):
        text = "_" + text
    text = _truncate(text, MAX_NAME_BYTES).rstrip(_TRAILING)
    if not text:
        return _FALLBACK
    if _is_device(text):
        head, dot, rest = text.partition(".")
        text = _truncate(f"{head}_{dot}{rest}", MAX_NAME_BYTES).rstrip(_TRAILING)
    return text


def is_safe_name(name: str) -> bool:
    """Whether ``name`` is a name :func:`safe_name` returns (it passes unchanged)."""
    return isinstance(name, str) and name == safe_name(name)


def fold(name: str) -> str:
    """The form names are compared in without regard to case: NFC, then case-folded."""
    return unicodedata.normalize("NFC", name).casefold()


def unique_names(names: Iterable[str], reserved: Iterable[str] = (),
                 slug: Callable[[str], str] = safe_name) -> list[str]:
    """One safe name per entry of ``names``, in order, distinct without regard to case.

    Each name is ``slug(name)`` (:func:`safe_name` by default; any slug's result is passed
    through :func:`safe_name` too); a name equal, without regard to case, to one given to an
    earlier entry or to one of ``reserved`` (names the folder holds already, such as
    ``"figure"``) is numbered: ``cat``, ``cat-2``, ``cat-3``, ...
    """
    taken = {fold(r) for r in reserved}
    out = []
    for name in names:
        base = safe_name(slug(name))
        candidate, n = base, 2
        while fold(candidate) in taken:
            candidate = safe_name(f"{base}-{n}")
            n += 1
        taken.add(fold(candidate))
        out.append(candidate)
    return out


def npz_keys(names: Sequence[str]) -> dict[str, str]:
    """The key in an ``.npz`` file of each array name (class name -> key), in order.

    Keys are :func:`unique_names`: a class name that is already a safe name and distinct
    without regard to case keeps it (``"tiger cat"``); others get one (``"../../x"`` ->
    ``"_.._.._x"``, ``"a\\x00b"`` -> ``"a_b"``, ``"cat"`` after ``"Cat"`` -> ``"cat-2"``), so
    no member name leaves the archive's root, carries a NUL, or collides with another.
    The mapping back is :func:`dict` of the swapped items; ``summary.json`` keeps it as
    ``map_keys``.
    """
    names = list(names)
    return dict(zip(names, unique_names(names), strict=True))


# ----------------------------------------------------------------------------- output folders
def _flat(key: str, keep_suffix: bool) -> str:
    """A key's folders and file joined by ``__`` (``a/cat.jpg`` -> ``a__cat``), with the
    suffix's dot made ``_`` (``a__cat_jpg``) when ``keep_suffix``."""
    p = PurePosixPath(key)
    if not keep_suffix:
        p = p.with_suffix("") if p.suffix else p
    parts = ["up" if part == ".." else part for part in p.parts if part not in ("/", ".")]
    name = "__".join(parts)
    return name.replace(".", "_") if keep_suffix else name


def _numbered(names: list[str]) -> list[str]:
    """Later names equal (without regard to case) to an earlier one numbered ``-2``, ``-3``."""
    counts: dict[str, int] = {}
    taken = {fold(n) for n in names}
    out = []
    for n in names:
        folded = fold(n)
        count = counts.get(folded, 0) + 1
        counts[folded] = count
        if count == 1:
            out.append(n)
            continue
        candidate = safe_name(f"{n}-{count}")
        while fold(candidate) in taken:  # the numbered name met another input's: next number
            count += 1
            counts[folded] = count
            candidate = safe_name(f"{n}-{count}")
        taken.add(fold(candidate))
        out.append(candidate)
    return out


def output_names(keys: Sequence[str]) -> list[str]:
    """The output folder name of each input image, given by its key (its path, POSIX style,
    relative to the folder searched or as the user wrote it), in the order given.

    Each name is the :func:`safe_name` of the file's stem (``photos/IMG 1.jpg`` -> ``IMG 1``,
    ``..png`` -> ``unnamed``, ``CON.png`` -> ``CON_``). Names shared by several inputs without
    regard to case (``a/cat.jpg``, ``b/Cat.jpg``) are replaced, for those inputs only, by the key
    with its folders joined by ``__`` (``a__cat``, ``b__Cat``; ``..`` written ``up``), then, if
    still shared (``cat.jpg`` and ``cat.png`` in one folder), with the suffix kept
    (``a__cat_jpg``), then numbered ``-2``, ``-3`` in the order given. The names depend only on
    the keys and their order, are distinct without regard to case, and each is a single safe
    path component (never ``.``, ``..`` or empty).
    """
    names = [safe_name(PurePosixPath(k).stem) for k in keys]
    for keep_suffix in (False, True):
        groups: dict[str, list[int]] = defaultdict(list)
        for i, n in enumerate(names):
            groups[fold(n)].append(i)
        for members in groups.values():
            if len(members) > 1:
                for i in members:
                    names[i] = safe_name(_flat(keys[i], keep_suffix))
    return _numbered(names)


# Longest stem that safe_filename produces; well below every common file-system limit.
_MAX_STEM = 120



def safe_filename(name: str) -> str:
    """Turn a class name such as ``"tiger cat"`` or ``"crane/bird"`` into an ASCII file stem.

    Accents are dropped (``"café"`` becomes ``"cafe"``); ASCII letters, digits, ``-``, ``_``
    and ``.`` are kept; every run of other characters (spaces and slashes included) becomes a
    single ``_``; repeated ``_`` and ``.`` are collapsed; ``.``, ``_`` and ``-`` are stripped
    from both ends; the result then goes through :func:`dcsm.io.names.safe_name`. It is never
    empty (``"unnamed"``), never starts with ``.``, is at most 121 characters long and is never
    a device name Windows reserves (``"CON"`` becomes ``"CON_"``, ``"aux.x"`` ``"aux_.x"``).
    """
    ascii_name = unicodedata.normalize("NFKD", str(name)).encode("ascii", "ignore").decode("ascii")
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", ascii_name)
    stem = re.sub(r"_{2,}", "_", stem)
    stem = re.sub(r"\.{2,}", ".", stem)
    stem = stem[:_MAX_STEM].strip("._-")
    return safe_name(stem)
