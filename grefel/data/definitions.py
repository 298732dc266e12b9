"""Dataset definitions: the explicit class maps, raw codes, splits and layouts of each dataset.

Each dataset is one TOML file in the top-level ``datasets/`` folder (installed as the package
``grefel.definitions``). Class order is never derived from folder names: every protocol lists its
classes in one canonical order, and every raw code maps to a class by name. Keys of a file::

    id, title, homepage, access, group, default_protocol, evaluation
    [protocols.<p>]  name (prepared dataset name), classes (canonical order)
    [codes]          raw code -> class name
    [dropped]        raw codes that are never labels -> meaning
    [splits]         official split -> stored split (train / val / test)
    [attributes.<a>] code -> meaning (per-image attributes such as RAF-DB's gender)
    [[layouts]]      name, looks_for (quoted in the error when a raw folder matches none)
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from functools import cache
from importlib.resources import files

from grefel.core.errors import DatasetError


@dataclass(frozen=True)
class Definition:
    id: str
    title: str
    homepage: str
    access: str
    group: str
    default_protocol: str
    evaluation: str
    protocols: dict[str, dict]
    codes: dict[str, str]
    dropped: dict[str, str] = field(default_factory=dict)
    splits: dict[str, str] = field(default_factory=dict)
    attributes: dict[str, dict[str, str]] = field(default_factory=dict)
    layouts: list[dict] = field(default_factory=list)

    def protocol(self, protocol: str | int | None) -> str:
        """The protocol key asked for (or the default), checked against the definition."""
        p = self.default_protocol if protocol in (None, "") else str(protocol)
        if p not in self.protocols:
            have = ", ".join(self.protocols)
            raise DatasetError(
                f"{self.id} has no protocol '{p}' (available: {have}): pass --protocol {have.split(',')[0]}"
            )
        return p

    def classes(self, protocol: str | None = None) -> list[str]:
        return list(self.protocols[self.protocol(protocol)]["classes"])

    def prepared_name(self, protocol: str | None = None) -> str:
        """Folder name under the data root (``affectnet7`` / ``affectnet8``, else the dataset id)."""
        return self.protocols[self.protocol(protocol)].get("name", self.id)

    def label(self, code: str, protocol: str | None = None) -> int | None:
        """Class index of a raw code in ``protocol``; None when the code is not a label there."""
        name = self.codes.get(str(code))
        classes = self.classes(protocol)
        return classes.index(name) if name in classes else None

    def exclusion_reason(self, code: str, protocol: str | None = None) -> str:
        """Why ``code`` gives no label (the reason written to skipped.csv)."""
        code = str(code)
        if code in self.dropped:
            return f"excluded: code {code} ({self.dropped[code]}) is never a label"
        if code in self.codes:
            return f"excluded: code {code} ({self.codes[code]}) is not in the {self.protocol(protocol)}-class protocol"
        return f"unknown label code ({code!r})"

    def split(self, official: str) -> str | None:
        return self.splits.get(official)

    def layouts_text(self) -> str:
        return "; ".join(f"{lay['name']}: {lay['looks_for']}" for lay in self.layouts)


def dataset_ids() -> list[str]:
    return sorted(p.name[:-5] for p in files("grefel.definitions").iterdir() if p.name.endswith(".toml"))


@cache
def load_definition(dataset: str) -> Definition:
    """The definition of ``dataset`` (``rafdb``, ``affectnet``, ``ferplus``, ``ferg``, ``jaffe``, ``affwild2``)."""
    res = files("grefel.definitions").joinpath(f"{dataset}.toml")
    if not res.is_file():
        raise DatasetError(f"unknown dataset '{dataset}': choose one of {', '.join(dataset_ids())}")
    d = tomllib.loads(res.read_text())
    return Definition(
        id=d["id"],
        title=d["title"],
        homepage=d.get("homepage", ""),
        access=d.get("access", ""),
        group=d.get("group", ""),
        default_protocol=str(d["default_protocol"]),
        evaluation=d.get("evaluation", ""),
        protocols={str(k): v for k, v in d["protocols"].items()},
        codes={str(k): v for k, v in d.get("codes", {}).items()},
        dropped={str(k): v for k, v in d.get("dropped", {}).items()},
        splits=dict(d.get("splits", {})),
        attributes={k: {str(c): m for c, m in v.items()} for k, v in d.get("attributes", {}).items()},
        layouts=list(d.get("layouts", [])),
    )
