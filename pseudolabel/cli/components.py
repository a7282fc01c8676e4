"""Command-line faces of the registered components: choice lists (``--method``, ``--format``) and
one flag per declared option, in a help panel named after its component."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable
from enum import Enum
from typing import Annotated, Any

import typer

from pseudolabel.core.components import Component, Flag, registry
from pseudolabel.core.errors import ConfigError


def _choice_enum(enum_name: str, values: Iterable[str]) -> type[Enum]:
    """A str Enum of ``values`` (what Typer offers as a flag's choices)."""
    return Enum(enum_name, {value.replace("-", "_"): value for value in values}, type=str)  # type: ignore[return-value]


def choices(kind: str, enum_name: str) -> type[Enum]:
    """A str Enum of the registered ``kind`` names."""
    return _choice_enum(enum_name, registry(kind))


def names(kind: str) -> str:
    """The registered ``kind`` names, comma-separated (for help texts)."""
    return ", ".join(registry(kind))


def with_component_options(*kinds: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Give a command one flag per option of every registered component of ``kinds`` (before
    ``--config``); the command reads them from ``ctx.params`` (see :func:`component_options`).

    A declared flag the command already has is not added; running the command then stops with
    an error naming the component, so one plugin cannot silently take another option's flag.
    Components of one family that declare the same option (HQ-SAM's sizes and ``hq_token_only``)
    share its flag, shown in one panel naming them all.
    """

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        signature = inspect.signature(command, eval_str=True)
        taken = set(signature.parameters)
        shared: dict[str, tuple[Flag, str, list[str]]] = {}
        clashes = []
        for kind in kinds:
            for declared in registry(kind).values():
                for flag in declared.flags():
                    if flag.param in shared and shared[flag.param][:2] == (flag, kind):
                        shared[flag.param][2].append(declared.name)
                    elif flag.param in taken:
                        clashes.append(f"the {kind} {declared.name!r} declares --{flag.flag}, which is taken")
                    else:
                        taken.add(flag.param)
                        shared[flag.param] = (flag, kind, [declared.name])
        added = [_parameter(flag, f"{', '.join(owners)} ({kind})") for flag, kind, owners in shared.values()]

        @functools.wraps(command)
        def run(*args: Any, **kwargs: Any) -> Any:
            if clashes:
                raise ConfigError("; ".join(clashes) + ": rename the plugin's option")
            for parameter in added:
                kwargs.pop(parameter.name, None)
            return command(*args, **kwargs)

        parameters = list(signature.parameters.values())
        last = [p for p in parameters if p.name == "config"]
        rest = [p for p in parameters if p.name != "config"]
        run.__signature__ = signature.replace(parameters=[*rest, *added, *last])  # type: ignore[attr-defined]
        run.__annotations__ = {p.name: p.annotation for p in run.__signature__.parameters.values()}  # type: ignore[attr-defined]
        return run

    return decorate


def _parameter(flag: Flag, panel: str) -> inspect.Parameter:
    """The command parameter of one declared flag, in help panel ``panel``."""
    names = f"--{flag.flag}/--no-{flag.flag}" if flag.annotation is bool else f"--{flag.flag}"
    option = typer.Option(names, help=flag.help, rich_help_panel=panel)
    annotation = _choice_enum(flag.param, flag.choices) if flag.choices else flag.annotation
    return inspect.Parameter(
        flag.param,
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
        default=flag.default,
        annotation=Annotated[annotation, option],
    )


def component_options(kind: str, name: str, params: dict[str, Any]) -> dict[str, Any]:
    """``{name: options}`` for a component with declared options, from a command's parameters;
    empty for one without (the built-ins read their settings groups)."""
    declared: Component = registry(kind)[name]
    return {name: declared.options_from(params)} if declared.options is not None else {}


CHOOSING_FLAG = {"exporter": "--format", "sam": "--sam", "labeler": "--method", "refiner": "--refine"}
"""The flag that picks a component of each kind (for error messages)."""


def refuse_other_components_options(ctx: typer.Context, kind: str, chosen: str) -> None:
    """A ConfigError when the command line sets an option that the ``kind`` component ``chosen``
    does not declare but another does (``--val-split`` belongs to yolo-seg, so it is refused with
    cvat-mask; ``--hq-token-only`` with ``--sam vit_b``)."""
    own = {flag.param for flag in registry(kind)[chosen].flags()}
    for declared in registry(kind).values():
        for flag in declared.flags():
            if flag.param in own:
                continue
            source = ctx.get_parameter_source(flag.param)  # Typer's own Click enum: compared by name
            if source is not None and source.name == "COMMANDLINE":
                owners = [other.name for other in registry(kind).values() if flag in other.flags()]
                raise ConfigError(
                    f"--{flag.flag} is an option of {CHOOSING_FLAG[kind]} {', '.join(owners)}, not of {chosen}"
                )
