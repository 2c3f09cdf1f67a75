"""Standard open-set known/unknown class splits.

The lists are the Neal et al. (ECCV 2018) protocol as published in Vaze et al. (ICLR 2022),
``data/open_set_splits/osr_splits.py`` of sgvaze/osr_closed_set_all_you_need; the GradMix authors'
``datautil.py`` carries the same lists. Each entry lists the *known* classes of one split; the
unknown classes are the rest of the dataset (for CIFAR+N: the listed CIFAR-100 classes).
"""
from __future__ import annotations

OSR_SPLITS: dict[str, list[list[int]]] = {
    "mnist": [
        [2, 4, 5, 9, 8, 3],
        [3, 2, 6, 9, 4, 0],
        [5, 8, 3, 2, 4, 6],
        [3, 7, 8, 4, 0, 5],
        [6, 3, 4, 9, 8, 2],
    ],
    "svhn": [
        [5, 3, 7, 2, 8, 6],
        [3, 8, 7, 6, 2, 5],
        [8, 9, 4, 7, 2, 1],
        [3, 8, 2, 5, 0, 6],
        [4, 9, 2, 7, 1, 0],
    ],
    "cifar-10-10": [
        [0, 6, 4, 9, 1, 7],
        [7, 6, 4, 9, 0, 1],
        [1, 5, 7, 3, 9, 4],
        [8, 6, 1, 9, 0, 7],
        [2, 4, 1, 7, 9, 6],
    ],
    # CIFAR+N: the 4 known CIFAR-10 classes ...
    "cifar-10-100": [
        [4, 7, 9, 1],
        [6, 7, 1, 9],
        [9, 6, 1, 7],
        [6, 4, 9, 1],
        [1, 0, 9, 8],
    ],
    # ... and the CIFAR-100 classes used as unknowns.
    "cifar-10-100-10": [
        [30, 25, 1, 9, 8, 0, 46, 52, 49, 71],
        [41, 9, 49, 40, 73, 60, 48, 30, 95, 71],
        [8, 9, 49, 40, 73, 60, 48, 95, 30, 71],
        [95, 60, 30, 73, 46, 49, 68, 99, 8, 71],
        [33, 2, 3, 97, 46, 21, 64, 63, 88, 43],
    ],
    "cifar-10-100-50": [
        [27, 94, 29, 77, 88, 26, 69, 48, 75, 5, 59, 93, 39, 57, 45, 40, 78, 20, 98, 47, 66, 70, 91, 76, 41,
         83, 99, 32, 53, 72, 2, 95, 21, 73, 84, 68, 35, 11, 55, 60, 30, 25, 1, 9, 8, 0, 46, 52, 49, 71],
        [65, 97, 86, 24, 45, 67, 2, 3, 91, 98, 79, 29, 62, 82, 33, 76, 0, 35, 5, 16, 54, 11, 99, 52, 85,
         1, 25, 66, 28, 84, 23, 56, 75, 46, 21, 72, 55, 68, 8, 69, 41, 9, 49, 40, 73, 60, 48, 30, 95, 71],
        [20, 83, 65, 97, 94, 2, 93, 16, 67, 29, 62, 33, 24, 98, 5, 86, 35, 54, 0, 91, 52, 66, 85, 84, 56,
         11, 1, 76, 25, 55, 21, 99, 72, 41, 23, 75, 28, 68, 69, 46, 8, 9, 49, 40, 73, 60, 48, 95, 30, 71],
        [92, 82, 77, 64, 5, 33, 62, 56, 70, 0, 20, 28, 67, 14, 84, 53, 91, 29, 85, 2, 52, 83, 75, 35, 11,
         21, 72, 98, 55, 1, 41, 76, 25, 66, 69, 9, 48, 54, 40, 23, 95, 60, 30, 73, 46, 49, 68, 99, 8, 71],
        [47, 6, 19, 0, 62, 93, 59, 65, 54, 70, 34, 55, 23, 38, 72, 76, 53, 31, 78, 96, 77, 27, 92, 18, 82,
         50, 98, 32, 1, 75, 83, 4, 51, 35, 80, 11, 74, 66, 36, 42, 33, 2, 3, 97, 46, 21, 64, 63, 88, 43],
    ],
    "tinyimagenet": [
        [108, 147, 17, 58, 193, 123, 72, 144, 75, 167, 134, 14, 81, 171, 44, 197, 152, 66, 1, 133],
        [198, 161, 91, 59, 57, 134, 61, 184, 90, 35, 29, 23, 199, 38, 133, 19, 186, 18, 85, 67],
        [177, 0, 119, 26, 78, 80, 191, 46, 134, 92, 31, 152, 27, 60, 114, 50, 51, 133, 162, 93],
        [98, 36, 158, 177, 189, 157, 170, 191, 82, 196, 138, 166, 43, 13, 152, 11, 75, 174, 193, 190],
        [95, 6, 145, 153, 0, 143, 31, 23, 189, 81, 20, 21, 89, 26, 36, 170, 102, 177, 108, 169],
    ],
}

# The embedded scikit-learn digits are the same ten digit classes as MNIST, so MNIST's splits apply.
OSR_SPLITS["digits"] = OSR_SPLITS["mnist"]

NUM_SPLITS = 5


def known_classes(protocol: str, split: int) -> list[int]:
    """Known class indices of ``split`` (0-based) under ``protocol`` (a key of ``OSR_SPLITS``)."""
    if protocol not in OSR_SPLITS:
        raise ValueError(f"unknown split protocol {protocol!r}; valid: {sorted(OSR_SPLITS)}")
    splits = OSR_SPLITS[protocol]
    if not 0 <= split < len(splits):
        raise ValueError(f"split {split} out of range for {protocol!r}; valid: 0..{len(splits) - 1}")
    return list(splits[split])


def resolve_classes(entries, names, by_name: bool, where: str = "data.known_classes") -> tuple[list[int], list[str]]:
    """Class indices of ``entries`` (``data.known_classes``) among ``names``, and warnings to report.

    A string is a class name (exact match). An integer (YAML reads unquoted ``1`` as an integer):

    * ``by_name`` (ImageFolder, where class names are folder names): the folder whose name is that
      integer written in decimal, so ``[1, 2]`` with folders ``1 … 10`` selects folders ``1`` and ``2``
      (not the folders at sorted positions 1 and 2, ``10`` and ``2``). When another folder sits at that
      position the ambiguity is reported in the warnings. An integer that names no folder is refused:
      positions in the sorted folder list are not accepted, and YAML 1.1 reads unquoted ``001`` as 1
      and ``010`` as 8 (octal), so numeric folder names must be quoted (``['001', '010']``).
    * otherwise (the built-in datasets): the class id (0 .. len(names) - 1), as in the OSR split lists.

    Raises ConfigError naming the entry and the valid names.
    """
    from .checks import ConfigError

    index = {n: i for i, n in enumerate(names)}
    shown = f"{list(names)[:20]}{' ...' if len(names) > 20 else ''}"
    ids, warnings = [], []
    for c in entries:
        if isinstance(c, str):
            if c not in index:
                raise ConfigError(f"{where}: unknown class {c!r}; valid names: {shown}")
            ids.append(index[c])
        elif isinstance(c, int) and not isinstance(c, bool):
            if not by_name:
                if not 0 <= c < len(names):
                    raise ConfigError(f"{where}: unknown class {c!r}; valid names: {shown} or ids 0..{len(names) - 1}")
                ids.append(c)
                continue
            if str(c) in index:
                ids.append(index[str(c)])
                if 0 <= c < len(names) and names[c] != str(c):
                    warnings.append(f"{where}: {c} selects the folder named '{c}', not folder '{names[c]}' at "
                                    f"sorted position {c}; entries are folder names (quote them to silence this)")
                continue
            octal = [n for n in names if n.isdigit() and len(n) > 1 and n.startswith("0")
                     and set(n) <= set("01234567") and int(n, 8) == c]
            padded = [n for n in names if n.isdigit() and int(n) == c]
            hint = (f"YAML reads unquoted {octal[0]} as the octal number {c}: write '{octal[0]}' in quotes"
                    if octal else f"did you mean '{padded[0]}'? write it in quotes" if padded
                    else "write the folder name in quotes")
            raise ConfigError(f"{where}: {c} is not a class folder name; with ImageFolder data the entries are "
                              f"folder names, not positions ({hint}); folders: {shown}")
        else:
            raise ConfigError(f"{where}: {c!r} is neither a class name nor an id")
    return ids, warnings
