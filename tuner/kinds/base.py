"""The contract every study kind fulfils (docs/design.md §5), in the spirit of optuna's
``BaseStorage``: the lifecycle, the set-up, the pool and the read side call only what is here, so
a kind is added by writing one module, never by branching on a mode string.

A kind says

* what it names its studies (:meth:`StudyKind.study_name`) and what its studies record and check
  (:meth:`StudyKind.record`, :meth:`StudyKind.expected`),
* which trials are enqueued for it (:meth:`StudyKind.queue`: the default trials of a searched
  kind, exactly once; every trial of a fixed kind, whose work is its queue),
* how many trials a study still wants (:meth:`StudyKind.work_left`),
* and how one claimed trial is run (:meth:`StudyKind.prepare` returns a :class:`Job`).

What a study holds is read back by ``tuner.read.results``; the views (``tables``, ``report``,
``notes``) key their sections by :attr:`StudyKind.name`.

Errors, as a kind raises them: a stored study whose attrs no longer parse raises
``objectives.ConfigError`` (:meth:`StudyKind.task_from`). A trial that cannot run as asked (a
loss that is not finite, ...) raises an ``objectives.DkdError`` from its job's ``call``: the
lifecycle fails that trial, queues its retry and the worker goes on; ``optuna.TrialPruned`` from
``call`` prunes it. Anything else, and any exception from :meth:`StudyKind.prepare`, is a bug: the
trial fails (retried later) and the worker stops with it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import optuna
from optuna.trial import FrozenTrial, TrialState

from objectives import EvalPoint, FederationBundle, StudyConfig, parse_config
from objectives.batched import TrialSpec
from tuner.errors import StorageError, StoredCodeError
from tuner.store.adapter import fixed_params
from tuner.store.db import Counts
from tuner.store.records import DefaultMark
from tuner.store.storage import mask

if TYPE_CHECKING:
    from tuner.options import TuneOptions

OnEval = Callable[[EvalPoint], None]
#: A trial to enqueue: its parameters and the user attrs it starts with.
Queued = tuple[dict[str, Any], dict[str, Any]]


@dataclass(frozen=True)
class Task:
    """One study a worker serves, as plain picklable data: its name and kind, what it is about
    (``target``: a pair, a client and its neighbours, ...), the federation it runs on, its
    search space (None for fixed kinds), its budget (None: the queue is the budget), the
    trials a fixed kind wants enqueued, and how a pair study spends its budget (``strategy``: a
    name of tuner.strategies.STRATEGIES; None reads as tuner.strategies.UNNAMED)."""

    study: str
    kind: str
    target: tuple[int, ...]
    config: StudyConfig
    space: Any = None
    budget: int | None = None
    wanted: tuple[Queued, ...] = field(default=())
    strategy: str | None = None


@dataclass
class Job:
    """One claimed trial, ready to run: its parameters, the attrs recorded before it runs, how
    to run it (``call``, given the pruning callback) and how to read its result (``finish``:
    the objective value and the attrs recorded after it). ``spec`` lets a batchable kind train
    it with others (objectives.batched)."""

    params: dict[str, Any]
    attrs: dict[str, Any]
    call: Callable[[OnEval | None], Any]
    finish: Callable[[Any], tuple[float, dict[str, Any]]]
    prunable: bool = True
    spec: TrialSpec | None = None


class StudyKind(ABC):
    """Base class of the kinds; see the module docstring. A kind implements every abstract
    method (a module that forgets one fails when its instance is made, at import)."""

    #: The kind's name, stored in every study of it as the user attr ``mode``.
    name: ClassVar[str] = ""
    #: True when every trial is enqueued (compare cells, confirmation runs): nothing is sampled,
    #: and a claim that finds the queue empty is surplus.
    fixed: ClassVar[bool] = False
    #: True when its trials can be trained K at once (``--batch-trials``).
    batchable: ClassVar[bool] = False
    #: The ``--precision`` values its trials run in (tuner.run.applies: others are not used).
    precisions: ClassVar[tuple[str, ...]] = ("fp32",)
    #: True when its trials report evaluation points a pruner decides on (``--pruner``).
    prunable: ClassVar[bool] = False
    #: True when its studies can be raced (``--strategy``) and answer against a default
    #: (``--min-gain``).
    races: ClassVar[bool] = False
    #: The kind whose studies confirm this kind's answers on fresh seeds once a run has tuned
    #: them (``--confirm K``: a run's second phase); None: nothing confirms them.
    confirmed_by: ClassVar[str | None] = None
    #: True when each study is about one participant pair (its target is the pair): a joining
    #: worker's ``--pairs`` picks among them.
    per_pair: ClassVar[bool] = False

    @abstractmethod
    def study_name(self, federation: str, target: tuple[int, ...]) -> str:
        """The unique name of the study of ``target`` in ``federation`` (decides who sets it up)."""

    @abstractmethod
    def expected(self, task: Task) -> dict[str, Any]:
        """The attrs an existing study must hold for this task to add trials to it (dotted keys
        into the attrs); a mismatch is refused in one line (:meth:`conflict`)."""

    #: Wordings of a conflict per expected key (see :func:`conflict`).
    phrases: ClassVar[dict[str, str]] = {
        "federation_hash": "holds federation hash {have} but the config gives {want}",
    }

    def conflict(self, name: str, attrs: dict[str, Any], task: Task, url: str) -> str | None:
        """Why ``task`` cannot add trials to the existing study ``name`` (None if it can)."""
        return conflict(name, attrs, self.expected(task), url, self.phrases)

    @abstractmethod
    def record(self, task: Task, bundle: FederationBundle) -> dict[str, Any]:
        """Every attr the study records when it is created (``expected`` among them)."""

    @abstractmethod
    def queue(self, task: Task, trials: Sequence[FrozenTrial]) -> list[Queued]:
        """The trials to enqueue, given those the study holds: what is not there yet (so that
        set-up and every later run enqueue each wanted trial once)."""

    @abstractmethod
    def task_from(self, name: str, attrs: dict[str, Any], budget: int | None) -> Task:
        """The task a joining worker serves for the stored study ``name`` (its attrs hold the
        config, target and space; a fixed kind's queue is already in the study). Raises
        ``objectives.ConfigError`` when the stored config no longer parses."""

    def before_claim(self, study: optuna.Study, task: Task) -> str | None:
        """Called before a worker claims a trial of the study: enqueue what the kind decides
        from the study's trials (a race's next rounds), or return why the study is done (the
        worker then claims nothing there). Default: nothing to do."""
        return None

    def work_left(self, counts: Counts, task: Task) -> int:
        """Trials still to start in the study."""
        if task.budget is None:
            return counts.waiting
        return counts.left(task.budget)

    @abstractmethod
    def prepare(
        self,
        trial: optuna.Trial,
        task: Task,
        bundle: FederationBundle,
        *,
        seed: int,
        device: str,
        precision: str,
    ) -> Job:
        """Suggest (or read back) the trial's parameters and say how to run it. Raises nothing
        for a task it set up: a trial's own trouble belongs in the job's ``call``."""

    def share(self, study: optuna.Study, task: Task, number: int) -> int:
        """Enqueue what the task's strategy takes from the kind's other studies of the
        federation if the claim numbered ``number`` is the one that does; return how many.
        Default: nothing."""
        return 0

    def warm_start(self, study: optuna.Study, task: Task, number: int) -> int:
        """Enqueue what the kind's other studies found good if the claim numbered ``number`` is
        the one that does (``--warm-start``); return how many. Default: no warm start."""
        return 0

    #: The run's phase its studies are served in and what one trial is, in words (the progress
    #: display: "tuning: 3/20 trials done"); a kind that races takes both from its strategy.
    phase: ClassVar[str] = "tuning"
    unit: ClassVar[str] = "trials"
    #: True when the best value so far means something to the user (the progress display).
    shows_best: ClassVar[bool] = True
    #: What the objective value is, for worker logs.
    value_name: ClassVar[str] = "gain"
    #: The objective's name and unit as the study records it (Optuna's metric name, which
    #: optuna-dashboard shows on its axes instead of "Objective 0").
    metric: ClassVar[str] = "gain (pp)"

    def describe(self, params: dict[str, Any]) -> str:
        """The trial's parameters in a short line (worker logs)."""
        return " ".join(f"{k}={v}" for k, v in params.items())


class TunedKind(StudyKind):
    """A kind a tuning run tunes directly: the ``--mode`` of the same name (tuner.options.MODES).
    Besides the contract it says how a run's config and options become its studies, so the run
    composes a mode without branching on its name."""

    @abstractmethod
    def run_space(self, config: StudyConfig, space: Any) -> Any:
        """Its studies' search space from the config's ``[search]`` (a SearchSpace); raises a
        DkdError (one line) for a config this kind cannot tune."""

    @abstractmethod
    def run_targets(self, config: StudyConfig, opts: TuneOptions) -> list[tuple[int, ...]]:
        """The targets of the run's studies, one study each, as the options pick them (raises
        UsageError for a pick the federation does not have)."""

    @abstractmethod
    def run_what(self, config: StudyConfig) -> str:
        """What its studies are, after their count in the run's first line (``pair(s)``)."""


def mode_of(attrs: dict[str, Any]) -> str | None:
    """The kind name a stored study's user attrs say (pair studies written before kinds had a
    ``mode`` hold a ``pair``); None for a study that is not dkd-tune's."""
    return attrs.get("mode") or ("pair" if "pair" in attrs else None)


def missing_defaults(task: Task, trials: Sequence[FrozenTrial], field: str) -> list[Queued]:
    """A searched kind's default trials that the study lacks, each named in the user attr
    ``default`` by its value of ``field`` (the pair's position, the client's aggregation)."""
    present = {mark.of for t in trials if (mark := DefaultMark.from_attrs(t.user_attrs))}
    return [
        (params, {**DefaultMark(params[field]).to_attrs(), "attempt": 1})
        for params in task.space.defaults()
        if params[field] not in present
    ]


def missing(
    wanted: Sequence[Queued], trials: Sequence[FrozenTrial], key: Callable[[dict], Any]
) -> list[Queued]:
    """The wanted trials whose ``key`` no trial holds (a failed one counts as missing: its
    retries, if any, are WAITING and count as present)."""
    present = {key(t.params or fixed_params(t) or {})
               for t in trials if t.state != TrialState.FAIL}  # fmt: skip
    return [q for q in wanted if key(q[0]) not in present]


#: The config files of this machine a command was given (``--config``), by federation hash:
#: the only place a participant's model code is taken from (docs/design.md §10 Trust).
_OWN: ContextVar[dict[str, StudyConfig] | None] = ContextVar("own_configs", default=None)


@contextmanager
def own_configs(*configs: StudyConfig | None) -> Iterator[None]:
    """While open, a study rebuilt from storage (:func:`stored_config`) takes its config from
    these (the user's own files) instead of its attrs; its stored federation hash must be one
    of theirs."""
    token = _OWN.set({c.federation_hash: c for c in configs if c is not None})
    try:
        yield
    finally:
        _OWN.reset(token)


def stored_config(name: str, attrs: dict[str, Any]) -> StudyConfig:
    """The config a study was set up with: the user's own (:func:`own_configs`) where one was
    given, else parsed back from its attrs. Stored attrs are data: a stored config whose
    participants name code (``module:callable`` or ``file.py:Name``) is refused, before
    anything is imported, unless the user's own config file names them."""
    own = _OWN.get()
    if own:
        stored = attrs.get("federation_hash")
        if stored not in own:
            raise StorageError(
                f"study {name} has federation hash {stored} but --config gives federation hash "
                f"{' or '.join(own)}: pass the config file of the run that made this study"
            )
        return own[stored]
    config = parse_config(attrs["config"], source=f"study {name}")
    code = sorted({p.model for p in config.participants if ":" in p.model})
    if code:
        raise StoredCodeError(
            f"study {name} stores participant models that are code ({', '.join(code)}); code "
            "is never taken from a database: pass --config FILE, your own config naming these "
            "participants"
        )
    return config


def config_record(config: StudyConfig) -> dict[str, Any]:
    """The config as stored in a study (without its file path, which differs per machine)."""
    out = config.to_dict()
    out.pop("source", None)
    return out


def _at(attrs: dict[str, Any], dotted: str) -> Any:
    """``attrs["search"]["divergence"]`` for ``search.divergence``."""
    value: Any = attrs
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def conflict(
    name: str, attrs: dict[str, Any], want: dict[str, Any], url: str, phrases: dict[str, str]
) -> str | None:
    """Why a run that wants ``want`` (dotted keys) cannot add trials to the existing study
    ``name`` holding ``attrs`` (None if it can): one line, with the fix."""
    fix = f"use another --storage than {mask(url)} or another federation name (--set name=...)"
    for key, wanted in want.items():
        have = _at(attrs, key)
        if have == wanted:
            continue
        if key == "kd_recipe":
            changed = sorted(k for k in wanted if (have or {}).get(k) != wanted[k])
            return f"study {name} was run with another KD recipe ([kd] {', '.join(changed)}): {fix}"
        label = key.split(".")[-1]
        phrase = phrases.get(key, "was run with {label} = {have}, the config gives {want}")
        return f"study {name} {phrase.format(label=label, have=have, want=wanted)}: {fix}"
    return None
