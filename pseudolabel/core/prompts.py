"""Class names, synonyms, background words and prompt templates of a dataset.

Built-in sets live in ``prompts/<name>.yaml`` (installed as ``pseudolabel.prompt_files``); a user
can pass their own YAML of the same form, or a plain class-list file (one name a line).
"""

from __future__ import annotations

import difflib
import importlib.resources
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pseudolabel.core.errors import ConfigError
from pseudolabel.core.files import read_user_text

BUILTIN_PROMPT_SETS = ("voc", "coco")
MIN_SYNONYMS = 3


@dataclass(frozen=True)
class ClassPrompt:
    """One class: canonical ``name``, synonym-fused ``display`` name, POLE ``synonyms``, and the
    ``detector`` name Grounding DINO captions use (SAM_WSSS renames three VOC classes)."""

    name: str
    display: str
    synonyms: tuple[str, ...] = ()
    coco_id: int | None = None
    detector: str = ""

    def __post_init__(self) -> None:
        if not self.detector:
            object.__setattr__(self, "detector", self.name)


@dataclass(frozen=True)
class PromptSet:
    """Everything text-side about a dataset's classes. Class id = index in ``classes``."""

    dataset: str
    classes: tuple[ClassPrompt, ...]
    background_words: tuple[str, ...]
    cam_template: str
    pole_template: str
    forward_templates: tuple[str, ...]
    reverse_templates: tuple[str, ...]
    source: str

    @property
    def class_names(self) -> list[str]:
        """Names by class id; index 0 is ``background``."""
        return [entry.name for entry in self.classes]

    def prompt_names(self, class_ids: list[int], style: str) -> list[str]:
        """What the prompts call each class: its fused ``display`` name (style ``fuse``), its
        ``detector`` name (style ``detector``), else its name."""
        field = {"fuse": "display", "detector": "detector"}.get(style, "name")
        return [getattr(self.classes[c], field) for c in class_ids]

    @property
    def num_classes(self) -> int:
        """Number of classes including background."""
        return len(self.classes)

    def class_id(self, name: str, where: str = "") -> int:
        """Id of a class name, matched ignoring case, spaces, ``_`` and ``-``.

        Raises:
            ConfigError: unknown name; the message suggests close names and synonyms.
        """
        key = name_key(name)
        for index, entry in enumerate(self.classes):
            if name_key(entry.name) == key:
                return index
        raise ConfigError(f"{where}unknown class {name!r} for {self.source}: {self._suggestion(name)}")

    def _suggestion(self, name: str) -> str:
        key = name_key(name)
        owners = [entry.name for entry in self.classes[1:] if key in {name_key(s) for s in entry.synonyms}]
        if owners:
            return f"it is a synonym of {', '.join(repr(o) for o in owners)}; use the class name"
        close = difflib.get_close_matches(name.lower(), self.class_names[1:], n=3, cutoff=0.6)
        if close:
            return "did you mean " + " or ".join(repr(c) for c in close) + "?"
        return "known classes: " + ", ".join(self.class_names[1:])

    def with_class_names(self, names: list[str], source: str) -> PromptSet:
        """A prompt set for a user's own class list, keeping this set's templates and background words.

        ``names`` may start with ``background``; it is added when missing.
        """
        if not names or name_key(names[0]) != "background":
            names = ["background", *names]
        known = {name_key(entry.name): entry for entry in self.classes}
        classes = tuple(known.get(name_key(n), ClassPrompt(name=n, display=n)) for n in names)
        result = PromptSet(
            dataset="custom",
            classes=classes,
            background_words=self.background_words,
            cam_template=self.cam_template,
            pole_template=self.pole_template,
            forward_templates=self.forward_templates,
            reverse_templates=self.reverse_templates,
            source=source,
        )
        _check_unique_names(result)
        return result


def name_key(name: str) -> str:
    """Comparison key for class names: lower case letters and digits only."""
    return re.sub(r"[^a-z0-9]", "", name.lower())


def load_prompts(name_or_path: str | Path) -> PromptSet:
    """Load a built-in prompt set (``voc``, ``coco``) or a YAML file of the same form.

    Raises:
        ConfigError: missing file, bad YAML, or a set that fails validation (the message
            names the file and the offending entry).
    """
    text_name = str(name_or_path)
    if text_name in BUILTIN_PROMPT_SETS:
        resource = importlib.resources.files("pseudolabel.prompt_files") / f"{text_name}.yaml"
        return parse_prompts(yaml.safe_load(resource.read_text(encoding="utf-8")), f"prompts/{text_name}.yaml")
    path = Path(name_or_path).expanduser()
    if not path.is_file():
        raise ConfigError(
            f"prompt set {text_name!r} is neither a built-in ({', '.join(BUILTIN_PROMPT_SETS)}) nor an existing file"
        )
    try:
        data = yaml.safe_load(read_user_text(path, "prompt set"))
    except yaml.YAMLError as error:
        raise ConfigError(f"{path} is not valid YAML: {error}".replace("\n", " ")) from error
    return parse_prompts(data, str(path))


def load_class_list(path: str | Path, base: PromptSet) -> PromptSet:
    """Read a class-list file (one class name a line, ``#`` comments) into a prompt set."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"class list {path} does not exist")
    names = [line.split("#", 1)[0].strip() for line in read_user_text(path, "class list").splitlines()]
    names = [name for name in names if name]
    if not [name for name in names if name_key(name) != "background"]:
        raise ConfigError(f"class list {path} names no class")
    return base.with_class_names(names, str(path))


def parse_prompts(data: Any, source: str) -> PromptSet:
    """Validate a parsed prompts YAML document and build the prompt set."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping with 'classes', 'templates', 'background_words'")
    for key in ("classes", "templates", "background_words"):
        if key not in data:
            raise ConfigError(f"{source}: missing key {key!r}")
    templates = data["templates"]
    if not isinstance(templates, dict):
        raise ConfigError(f"{source}: 'templates' must be a mapping")
    for key in ("cam", "pole", "forward", "reverse"):
        if key not in templates:
            raise ConfigError(f"{source}: templates: missing {key!r}")
    forward = _template_list(templates["forward"], f"{source}: templates.forward")
    reverse = _template_list(templates["reverse"], f"{source}: templates.reverse")
    cam, pole = (_template(templates[key], f"{source}: templates.{key}") for key in ("cam", "pole"))
    background_words = data["background_words"]
    if (
        not isinstance(background_words, list)
        or not background_words
        or not all(isinstance(word, str) and word.strip() for word in background_words)
    ):
        raise ConfigError(f"{source}: 'background_words' must be a non-empty list of words")
    raw_classes = data["classes"]
    if not isinstance(raw_classes, list) or len(raw_classes) < 2:
        raise ConfigError(f"{source}: 'classes' must list background and at least one class")
    classes = tuple(_class_prompt(entry, index, source) for index, entry in enumerate(raw_classes))
    if name_key(classes[0].name) != "background":
        raise ConfigError(f"{source}: class 0 must be 'background', got {classes[0].name!r}")
    for index, entry in enumerate(classes[1:], start=1):
        if len(entry.synonyms) < MIN_SYNONYMS:
            raise ConfigError(
                f"{source}: class {index} {entry.name!r} has {len(entry.synonyms)} synonyms; "
                f"POLE needs at least {MIN_SYNONYMS}"
            )
    prompt_set = PromptSet(
        dataset=str(data.get("dataset", Path(source).stem)),
        classes=classes,
        background_words=tuple(word.strip() for word in background_words),
        cam_template=cam,
        pole_template=pole,
        forward_templates=forward,
        reverse_templates=reverse,
        source=source,
    )
    _check_unique_names(prompt_set)
    return prompt_set


def _class_prompt(entry: Any, index: int, source: str) -> ClassPrompt:
    where = f"{source}: class {index}"
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) or not entry["name"].strip():
        raise ConfigError(f"{where}: each class needs a 'name'")
    name = entry["name"].strip()
    synonyms = entry.get("synonyms", [])
    if not isinstance(synonyms, list) or not all(isinstance(s, str) and s.strip() for s in synonyms):
        raise ConfigError(f"{where} {name!r}: 'synonyms' must be a list of names")
    coco_id = entry.get("coco_id")
    if coco_id is not None and not isinstance(coco_id, int):
        raise ConfigError(f"{where} {name!r}: 'coco_id' must be an integer")
    unknown = set(entry) - {"name", "display", "synonyms", "coco_id", "detector"}
    if unknown:
        raise ConfigError(f"{where} {name!r}: unknown keys {sorted(unknown)}")
    display = str(entry.get("display", name)).strip() or name
    detector = str(entry.get("detector", name)).strip() or name
    return ClassPrompt(name, display, tuple(s.strip() for s in synonyms), coco_id, detector)


def _template(value: Any, where: str) -> str:
    if not isinstance(value, str) or value.count("{}") != 1:
        raise ConfigError(f"{where}: a template must be a string with exactly one '{{}}', got {value!r}")
    return value


def _template_list(value: Any, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{where}: expected a non-empty list of templates")
    return tuple(_template(item, where) for item in value)


def _check_unique_names(prompt_set: PromptSet) -> None:
    seen: dict[str, str] = {}
    for entry in prompt_set.classes:
        key = name_key(entry.name)
        if key in seen:
            raise ConfigError(f"{prompt_set.source}: classes {seen[key]!r} and {entry.name!r} have the same name")
        seen[key] = entry.name
