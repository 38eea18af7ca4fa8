"""The user's own pre-trained participants (``[[participants]]``): their models and checkpoints.

Model code comes only from the model string the user wrote in the config (a Python file next to
it, or an importable package); a checkpoint is read with ``torch.load(..., weights_only=True)``,
so no code from it ever runs. Every way a participant can be unusable is found before anything is
written, and reported in one line that names the participant, the file and the fix.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import pickle
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

from .config import ParticipantConfig
from .errors import ParticipantError

_MODULES: dict[str, object] = {}  # model file path -> its module, imported once per process


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{exc.__class__.__name__}: {text[0]}" if text else exc.__class__.__name__


def _file_module(path: str, index: int) -> object:
    """Import a model file by path, under a name of its own (two configs' ``models.py`` never
    share a module)."""
    if path not in _MODULES:
        if not Path(path).is_file():
            raise ParticipantError(
                f"participant {index}: model file {path} not found: fix [[participants]].model "
                '("file.py:Name" is relative to the config file)'
            )
        name = "dkd_tune_user_" + hashlib.sha256(path.encode()).hexdigest()[:12]
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
        sys.modules[name] = module  # dataclasses and pickling look modules up by name
        try:
            spec.loader.exec_module(module)  # type: ignore[union-attr]
        except Exception as exc:
            del sys.modules[name]
            raise ParticipantError(
                f"participant {index}: importing model file {path} failed ({_first_line(exc)}): "
                "fix the file"
            ) from None
        _MODULES[path] = module
    return _MODULES[path]


def model_factory(spec: ParticipantConfig, index: int) -> Callable[..., nn.Module]:
    """The callable a model string names: ``file.py:Name`` or ``package.module:Name``."""
    if spec.model_file:
        module = _file_module(spec.model_file, index)
        tried = f"{spec.model_file}"
    else:
        name = spec.model.rpartition(":")[0]
        tried = f"import {name}"
        try:
            module = importlib.import_module(name)
        except Exception as exc:
            raise ParticipantError(
                f"participant {index}: model {spec.model!r} cannot be imported (tried '{tried}': "
                f'{_first_line(exc)}): install the package, or write "file.py:Name" for a file '
                "next to the config"
            ) from None
    factory = getattr(module, spec.model_name, None)
    if not callable(factory):
        defined = sorted(n for n, v in vars(module).items() if callable(v) and n[:1].isupper())
        raise ParticipantError(
            f"participant {index}: {tried} has no callable {spec.model_name!r} (it defines "
            f"{', '.join(defined[:8]) or 'none'}): fix [[participants]].model"
        )
    return factory


def new_model(spec: ParticipantConfig, index: int) -> nn.Module:
    """A fresh (untrained) model of the participant's architecture, channels_last like the
    built-in models (the data tensors are channels_last)."""
    factory = model_factory(spec, index)
    try:
        model = factory(**spec.kwargs)
    except Exception as exc:
        raise ParticipantError(
            f"participant {index}: {spec.describe()} failed ({_first_line(exc)}): fix "
            "[[participants]].kwargs"
        ) from None
    if not isinstance(model, nn.Module):
        raise ParticipantError(
            f"participant {index}: {spec.describe()} returned a {type(model).__name__}, not a "
            "torch.nn.Module: name a callable that builds the model"
        )
    return model.to(memory_format=torch.channels_last)


def load_state(spec: ParticipantConfig, index: int) -> dict[str, Tensor]:
    """The checkpoint's state_dict, read weights-only (no code from the file runs)."""
    path = spec.checkpoint
    fix = "save it with torch.save(model.state_dict(), path)"
    if not Path(path).is_file():
        raise ParticipantError(
            f"participant {index}: checkpoint {path} not found: fix [[participants]].checkpoint "
            "(relative to the config file)"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, ValueError, EOFError, OSError) as exc:
        raise ParticipantError(
            f"participant {index}: checkpoint {path} cannot be loaded weights-only "
            f"({_first_line(exc)[:160]}); dkd-tune never runs code from a checkpoint: {fix}"
        ) from None
    if not (
        isinstance(state, Mapping)
        and state
        and all(isinstance(k, str) and isinstance(v, Tensor) for k, v in state.items())
    ):
        raise ParticipantError(
            f"participant {index}: checkpoint {path} holds a {type(state).__name__}, not a "
            f"state_dict (parameter names to tensors): {fix}"
        )
    return dict(state)


def check_fit(model: nn.Module, state: Mapping[str, Tensor], spec: ParticipantConfig, index: int):
    """The state_dict must fit the model exactly; name the first key that does not."""
    own = model.state_dict()
    where = f"participant {index}: checkpoint {spec.checkpoint} does not fit {spec.describe()}"
    fix = "the model string and kwargs must build the architecture the checkpoint was saved from"
    for key, value in own.items():
        if key not in state:
            raise ParticipantError(f"{where}: missing key {key!r}; {fix}")
        if tuple(state[key].shape) != tuple(value.shape):
            raise ParticipantError(
                f"{where}: {key!r} has shape {list(state[key].shape)}, the model's is "
                f"{list(value.shape)}; {fix}"
            )
    for key in state:
        if key not in own:
            raise ParticipantError(f"{where}: unexpected key {key!r}; {fix}")


@torch.inference_mode()
def check_output(model: nn.Module, x: Tensor, classes: int, spec: ParticipantConfig, index: int):
    """One batch through the model in eval mode: logits [batch, classes], or a one-line error."""
    model.eval()
    try:
        out = model(x)
    except Exception as exc:
        raise ParticipantError(
            f"participant {index}: {spec.describe()} fails on a batch of the data "
            f"{list(x.shape)} ({_first_line(exc)[:160]}): the model must take the config's "
            "[data].channels and image_size"
        ) from None
    if not isinstance(out, Tensor) or out.shape != (len(x), classes):
        shape = list(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ParticipantError(
            f"participant {index}: {spec.describe()} gives outputs {shape} on a batch of "
            f"{len(x)}, the dataset has {classes} classes: build it with {classes} outputs "
            "(e.g. kwargs num_classes)"
        )


def load_participants(
    specs: tuple[ParticipantConfig, ...], x: Tensor, classes: int
) -> list[nn.Module]:
    """Every participant's model with its checkpoint's weights, each checked: it imports, the
    state_dict fits, and one batch of ``x`` gives ``classes`` logits. Nothing is written."""
    models = []
    for index, spec in enumerate(specs):
        model = new_model(spec, index)
        state = load_state(spec, index)
        check_fit(model, state, spec, index)
        model.load_state_dict(state)
        check_output(model, x[:2], classes, spec, index)
        models.append(model)
    return models
