"""Components: the labelers, refiners and export formats a run can use, each declared once.

A component's module declares a :class:`Component` (its name, a one-line summary, its options
as a frozen dataclass of :func:`option` fields, the hub models it builds, and where its builder
lives) and registers it with one line in a package's entry points::

    [project.entry-points."pseudolabel.refiners"]
    median = "my_package.median:COMPONENT"

pseudolabel's own components are registered the same way in its ``pyproject.toml``, so a plugin
installed beside it is a peer: it appears in ``--method`` / ``--refine`` / ``--format``, its
options become flags (help panel: the component's name) and config-file keys, a resume with
another value is refused, and the Python API takes it by name. Declarations must import
without torch (``--help`` reads them); the builder is imported only when a run builds the
component. Importable without torch.
"""

from __future__ import annotations

import dataclasses
import importlib
import sys
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from importlib.metadata import entry_points
from typing import Any

from pseudolabel.core.errors import ConfigError
from pseudolabel.core.plain import choice_value

KINDS = {
    "labeler": "pseudolabel.labelers",
    "refiner": "pseudolabel.refiners",
    "exporter": "pseudolabel.exporters",
    "sam": "pseudolabel.sam_models",
    "detector": "pseudolabel.detectors",
    "dataset": "pseudolabel.datasets",
}
"""Component kind -> its entry-point group."""
_SPEC = "pseudolabel"


@dataclass(frozen=True)
class OptionSpec:
    """How one option field is offered: help text, and the flag (``--name``) when it differs from
    the field's name with ``-`` for ``_``; ``flag=""``: not a flag (set from the API only)."""

    help: str
    flag: str | None = None
    choices: tuple[str, ...] | None = None
    parse: Callable[[str], Any] | None = None
    show: Callable[[Any], str] | None = None


def option(
    default: Any,
    help: str,
    *,
    flag: str | None = None,
    choices: tuple[str, ...] | None = None,
    parse: Callable[[str], Any] | None = None,
    show: Callable[[Any], str] | None = None,
) -> Any:
    """A component option: a dataclass field with its default and how it appears on the command
    line. ``choices``: the only values a str option takes; ``parse``: the flag is text that this
    turns into the field's value (``show`` writes the default as that text)."""
    return field(default=default, metadata={_SPEC: OptionSpec(help, flag, choices, parse, show)})


@dataclass(frozen=True)
class Flag:
    """One command-line flag of a component option: ``param`` is the command's parameter name
    (and config-file key), ``field`` the options dataclass field."""

    param: str
    flag: str
    field: str
    default: Any
    annotation: Any
    help: str
    choices: tuple[str, ...] | None = None
    parse: Callable[[str], Any] | None = None


@dataclass(frozen=True)
class Component:
    """A registered part of a run: a labeler, refiner, export format, SAM model, detector or
    dataset reader.

    Attributes:
        kind: ``labeler``, ``refiner``, ``exporter``, ``sam`` (a SAM model), ``detector`` (an
            open-vocabulary detector) or ``dataset`` (a reader).
        name: what ``--method`` / ``--refine`` / ``--format`` / ``--sam`` / ``--dataset`` take.
        summary: one line for ``--help``.
        builder: ``"module:attribute"`` of its builder, imported when a run builds it. Builders:
            labeler ``(hub, prompts, settings, options) -> Scorer``; refiner ``(hub, settings,
            options) -> Refiner``; exporter ``(dataset, request, options) -> ExportWriter``; sam
            ``(name, model_settings, device, options) -> SamPrompter`` (embed, boxes, points);
            detector ``(name, model_settings, device, options) -> GroundingDino``'s contract;
            dataset ``(root, split, prompts, labels_file, gt_dir, max_image_pixels) -> Dataset``
            (``labels_file`` ``none``: no image-level labels).
        options: a frozen dataclass of :func:`option` fields (None: no options).
        models: hub models it builds (``clip``, ``sam``, ``grounding``), checked before a run.
        cpu_only: a refiner that runs on the CPU only and pickles (``refine`` runs it in worker
            processes).
        output_suffix: an exporter that writes one file: its suffix (``.json``); None: a folder.
        weights: a model's checkpoint locator ``"module:function"``, ``(name, checkpoint) -> Path
            | None`` (downloads when missing; None for random weights), run before any work.
        prompt_set: a dataset reader's built-in prompt set (``voc``, ``coco``) that ``--classes``
            renames; own_classes: it reads its class names from its own files unless ``--prompts``
            or ``--classes`` say them.
    """

    kind: str
    name: str
    summary: str
    builder: str
    options: type | None = None
    models: tuple[str, ...] = ()
    cpu_only: bool = False
    output_suffix: str | None = None
    weights: str | None = None
    prompt_set: str = "voc"
    own_classes: bool = False

    def load(self) -> Callable[..., Any]:
        """The builder (imports its module)."""
        return _attribute(self.builder)

    def defaults(self) -> Any:
        """Its options with every default (None: it declares none)."""
        return self.options() if self.options is not None else None

    def locate_weights(self, checkpoint: str) -> Any:
        """The checkpoint file of this model for ``checkpoint`` (see ``weights``)."""
        if self.weights is None:
            raise ConfigError(f"the {self.kind} {self.name!r} declares no weights")
        return _attribute(self.weights)(self.name, checkpoint)

    def flags(self) -> list[Flag]:
        """The command-line flags of the options (fields declared with ``flag=""`` left out)."""
        if self.options is None:
            return []
        flags = []
        hints = _field_types(self.options)
        for item in dataclasses.fields(self.options):
            spec = item.metadata.get(_SPEC)
            if spec is None or spec.flag == "":
                continue
            flag = spec.flag or item.name.replace("_", "-")
            param = flag.replace("-", "_")
            default, annotation = item.default, hints[item.name]
            if spec.parse is not None:  # a text flag, parsed into the field's value
                default, annotation = (spec.show or str)(default), str
            flags.append(Flag(param, flag, item.name, default, annotation, spec.help, spec.choices, spec.parse))
        return flags

    def options_from(self, params: dict[str, Any]) -> Any:
        """The options dataclass from a command's parameters (missing ones keep their defaults)."""
        if self.options is None:
            return None
        values = {}
        for flag in self.flags():
            if flag.param in params:
                value = choice_value(params[flag.param])
                values[flag.field] = flag.parse(value) if flag.parse is not None and isinstance(value, str) else value
        return self.options(**values)


def _attribute(path: str) -> Any:
    """The object at ``"module:attribute"`` (imports the module)."""
    module, _, attribute = path.partition(":")
    return getattr(importlib.import_module(module), attribute)


def _field_types(options: type) -> dict[str, Any]:
    """Field name -> its type (resolving string annotations)."""
    return typing.get_type_hints(options)


@cache
def registry(kind: str) -> dict[str, Component]:
    """Every registered component of ``kind`` by name, pseudolabel's first, then plugins' by name.
    A plugin that does not import is left out with a one-line note on stderr, so it cannot stop
    every command.

    Raises:
        ConfigError: an entry point that is not a Component of this kind, or two of one name.
    """
    found: dict[str, Component] = {}
    for entry in sorted(
        entry_points(group=KINDS[kind]), key=lambda e: (not e.value.startswith("pseudolabel."), e.name)
    ):
        try:
            component = entry.load()
        except Exception as error:  # any import failure of someone else's package
            print(f"note: the {kind} plugin {entry.name!r} ({entry.value}) does not load, left out: {error}",
                  file=sys.stderr)  # fmt: skip
            continue
        if not isinstance(component, Component) or component.kind != kind:
            raise ConfigError(f"entry point {entry.name!r} ({entry.value}) is not a pseudolabel {kind} Component")
        if component.name in found:
            raise ConfigError(f"two {kind}s are named {component.name!r} ({found[component.name].builder}, "
                              f"{component.builder})")  # fmt: skip
        found[component.name] = component
    return found


def component(kind: str, name: str) -> Component:
    """The ``kind`` component ``name``; an unknown name is an error listing the known ones."""
    known = registry(kind)
    if name not in known:
        raise ConfigError(f"unknown {kind} {name!r}; choose from {', '.join(known)}")
    return known[name]
