"""Several one-round KD trials trained at once: one student per trial, their parameters stacked
along a leading trial dimension and run through one vmapped ``functional_call`` (torch.func).

Where one small student cannot fill a GPU, k students can: each forward is one call on
``[k, batch, ...]`` (vmap turns a convolution with stacked weights into one grouped convolution),
each backward one pass, each optimizer step a few elementwise kernels over all trials.

Each trial stays exactly what ``run_trial`` computes with the same arguments and seed: its own
temperature, α, divergence, transfer set, teachers and aggregation; its own batches drawn from
its own seeded generator in the same order (``kd_round.step_batches``, which ``run_trial``'s loop
takes too); its own soft targets (``kd_round.soft_targets``); its evaluation points at the same
steps (``kd_round.round_schedule``), scored and reported alike (``RoundEvaluator.score``,
``kd_round.eval_point``) from one vmapped pass over the students due; its own BatchNorm batch
statistics and running statistics (the buffers are stacked too, so each trial's BN sees only its
own batch, and the transfer and local batches of a step stay two forwards, as in ``run_trial``);
its own number of steps (a finished trial is frozen while the others go on). Only the float
rounding of the fused kernels differs, so results agree within noise, not bit for bit.

Only students of one architecture can be stacked: in a federation of the user's own participants
the trials of a call are grouped by their student's architecture and each group is trained as one
stacked batch, one group after the other.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.func import functional_call, stack_module_state, vmap

from .bundle import DeviceTensors, FederationBundle
from .config import KDRecipe
from .divergences import get_divergence
from .evaluation import EvalSets, RoundEvaluator
from .kd_round import (
    batch_generator,
    draws_local,
    eval_point,
    local_batches,
    round_schedule,
    soft_targets,
    step_batches,
)
from .train import lr_at
from .trial import TrialResult, TrialSpec, _check_args, check_device, check_precision

Outcome = TrialResult | Exception


def run_trials(
    bundle: FederationBundle,
    specs: Sequence[TrialSpec],
    *,
    device: str | torch.device = "cpu",
    recipe: KDRecipe | None = None,
    precision: str = "fp32",
) -> list[Outcome]:
    """Run the trials of ``specs`` together; one outcome per spec, in order.

    An outcome is the trial's ``TrialResult``, or the exception that ended that trial alone: a
    ``TrialError`` for bad arguments, ``NonFiniteLoss``, or whatever its ``on_eval`` raised (the
    tuner's ``optuna.TrialPruned``); the other trials go on. ``seconds`` of a result is the wall
    time from the start of the call to the end of that trial (the trials share it). An error of
    the call itself (a device that does not exist, an unknown precision) raises. ``recipe`` and
    ``precision`` as in ``run_trial``. Students of different architectures are trained in one
    stacked batch per architecture, in turn.
    """
    started = time.perf_counter()
    recipe = recipe or bundle.config.kd
    device = check_device(device)
    check_precision(precision, device)
    data = bundle.on(device)
    sets = EvalSets.of(bundle, recipe, device)  # one copy of the test sets for every trial
    outcomes: list[Outcome | None] = [None] * len(specs)
    plans: list[_Plan] = []
    for i, spec in enumerate(specs):
        try:
            plans.append(_Plan.make(i, spec, bundle, data, recipe, sets))
        except Exception as exc:  # a TrialError/ConfigError of this trial only
            outcomes[i] = exc
    groups: dict[str, list[_Plan]] = {}
    for plan in plans:
        groups.setdefault(bundle.architecture(plan.spec.student), []).append(plan)
    for group in groups.values():
        _Batch(bundle, data, recipe, device, precision, sets, group, outcomes, started).run()
    return outcomes  # type: ignore[return-value]


@dataclass
class _Plan:
    """One trial's fixed schedule: its batches in ``run_trial``'s order, its targets, its evals."""

    slot: int  # index into the caller's specs
    spec: TrialSpec
    transfer_rows: Tensor  # rows of train_x the transfer set is made of (CPU, int64)
    local_rows: Tensor  # rows of train_x that are the student's local data (CPU, int64)
    targets: Tensor  # [K', n_transfer, classes] log soft targets, float64, on the device
    steps: list[tuple[Tensor, Tensor | None]]  # per step: transfer batch, local batch (or None)
    eval_at: dict[int, int]  # step -> evaluation index (1..points)
    points: int
    lrs: list[float]
    evaluator: RoundEvaluator  # scores this trial's points as run_trial's does
    done: bool = False
    row: int = 0  # this trial's index along the stacked dimension

    @property
    def total(self) -> int:
        """The trial's number of steps (trials of different transfer sets differ)."""
        return len(self.steps)

    @property
    def local(self) -> bool:
        """Whether the transfer batch is the local batch (transfer set ``local``)."""
        return self.spec.transfer_set == "local"

    @property
    def context(self) -> str:
        """The trial's arguments as ``run_trial`` names them in a NonFiniteLoss."""
        s = self.spec
        return f"T={s.temperature}, alpha={s.alpha}, {s.divergence}, {s.transfer_set}"

    @classmethod
    def make(
        cls,
        slot: int,
        spec: TrialSpec,
        bundle: FederationBundle,
        data: DeviceTensors,
        recipe: KDRecipe,
        sets: EvalSets,
    ) -> _Plan:
        """The plan of ``spec`` after ``run_trial``'s checks (a bad spec raises, for its slot)."""
        s = spec
        _check_args(
            bundle, s.student, s.teachers, s.temperature, s.alpha, s.transfer_set, s.aggregation
        )
        get_divergence(s.divergence)
        local_rows = bundle.partition.participants[s.student]
        transfer_rows = local_rows if s.transfer_set == "local" else bundle.partition.public
        sources = list(s.teachers) + ([s.student] if s.transfer_set == "public+self" else [])
        targets = soft_targets(
            data, s.student, sources, transfer_set=s.transfer_set, temperature=s.temperature,
            aggregation=s.aggregation,
        )  # fmt: skip
        # run_trial's batches, all drawn up front and on the CPU (a permutation from a CPU
        # generator has the same values on any device): the stacked loop takes a step's rows
        # of every trial at once, and a plain list keeps the host from waiting on the device.
        gen, cpu = batch_generator(s.seed), torch.device("cpu")
        local_stream = None
        if draws_local(s.transfer_set, s.alpha):
            local_stream = local_batches(len(local_rows), recipe.batch_size, gen, cpu)
        steps = list(step_batches(len(transfer_rows), local_stream, recipe, gen, cpu))
        total, eval_at = round_schedule(len(transfer_rows), recipe)
        lrs = [lr_at(recipe, step, total) for step in range(total)]
        evaluator = RoundEvaluator(bundle, s.student, recipe, sets.x.device, sets=sets)
        return cls(
            slot, s, transfer_rows, local_rows, targets, steps, eval_at, len(eval_at), lrs,
            evaluator,
        )  # fmt: skip


@dataclass
class _Member:
    """One trial's part in one grouped forward: which rows it feeds and which terms it adds."""

    plan: _Plan
    rows: Tensor  # rows of train_x (CPU)
    kd_idx: Tensor | None  # indices into the trial's transfer set for the KD term, if any
    ce: bool


@dataclass
class _Batch:
    """The stacked students of one ``run_trials`` call and the loop that trains them."""

    bundle: FederationBundle
    data: DeviceTensors
    recipe: KDRecipe
    device: torch.device
    precision: str
    sets: EvalSets
    plans: list[_Plan]
    outcomes: list
    started: float

    def run(self) -> None:
        """Stack the students, train every live trial a step at a time, evaluate at its points."""
        b, plans = self.bundle, self.plans
        for row, plan in enumerate(plans):
            plan.row = row
        models = [b.model(p.spec.student, self.device) for p in plans]
        self.params, self.buffers = stack_module_state(models)
        # A skeleton on the meta device: functional_call only needs the module's structure.
        self.base = _vmap_friendly(b.new_model(plans[0].spec.student).to("meta"))
        # randomness="different": a user's model may use dropout; each trial draws its own mask
        # (the built-in models draw nothing, so for them this changes nothing).
        self.train_fwd = vmap(self._forward, randomness="different")
        self.eval_fwd = vmap(self._forward, in_dims=(0, 0, None))
        self.optimizer = _StackedOptimizer(self.params, self.recipe, len(plans))
        self._constants()
        for step in range(max(p.total for p in plans)):
            live = [p for p in plans if not p.done and step < p.total]
            if not live:
                break
            self._train_step(live, step)
            self._evaluate([p for p in live if step + 1 in p.eval_at], step + 1)

    # -- training -------------------------------------------------------------------------------

    def _forward(self, params: dict, buffers: dict, x: Tensor) -> Tensor:
        """One trial's forward with its own parameters and buffers (vmapped over the trials)."""
        return functional_call(self.base, (params, buffers), (x,))

    def _dev(self, values: Tensor | list) -> Tensor:
        """A small CPU tensor (or list of ints) on the device without a sync: a plain copy from
        pageable memory waits for the GPU's queue, a pinned non-blocking one does not, so the
        host can queue the next kernels while the device works."""
        t = values if isinstance(values, Tensor) else torch.tensor(values)
        if self.device.type != "cuda":
            return t
        return t.pin_memory().to(self.device, non_blocking=True)

    def _constants(self) -> None:
        """Per-trial weights on the device, rounded to float32 from Python floats as the single
        trial's ``a * kd`` and ``(1 - a) * ce`` do; a per-trial non-finite flag kept there."""
        specs = [p.spec for p in self.plans]
        self.alpha = self._dev(torch.tensor([s.alpha for s in specs], dtype=torch.float32))
        self.ce_weight = self._dev(torch.tensor([1 - s.alpha for s in specs], dtype=torch.float32))
        self.temps = self._dev(torch.tensor([s.temperature for s in specs], dtype=torch.float64))
        self.nonfinite = torch.zeros(len(specs), dtype=torch.bool, device=self.device)

    def _train_step(self, live: list[_Plan], step: int) -> None:
        """One optimizer step of every live trial: the transfer forwards (BN sees each trial's
        transfer batch), then the local forwards, one backward, one stacked update. Nothing here
        waits for the device (non-finite losses are flagged there, read at evaluations)."""
        self.base.train()
        first, second = [], []
        for p in live:
            idx, lidx = p.steps[step]
            a = p.spec.alpha
            if p.local:
                second.append(_Member(p, p.local_rows[idx], idx if a > 0 else None, a < 1))
                continue
            if a > 0:
                first.append(_Member(p, p.transfer_rows[idx], idx, False))
            if lidx is not None:  # the step drew a local batch (α < 1): the CE term
                second.append(_Member(p, p.local_rows[lidx], None, True))
        loss = torch.zeros(len(self.plans), device=self.device)
        # bf16 as in run_trial: the forwards under autocast, the KD term float64, CE float32.
        with torch.autocast(self.device.type, torch.bfloat16, enabled=self.precision == "bf16"):
            for phase in (first, second):
                for group in _by_size(phase):
                    rows = [m.plan.row for m in group]
                    loss = loss.index_add(0, self._dev(rows), self._group_loss(group, rows))
        live_rows = self._dev([p.row for p in live])
        live_loss = loss.index_select(0, live_rows)
        bad = self.nonfinite.index_select(0, live_rows) | ~torch.isfinite(live_loss)
        self.nonfinite.index_copy_(0, live_rows, bad)
        self.optimizer.zero_grad()
        live_loss.sum().backward()
        lr = [0.0] * len(self.plans)
        for p in live:
            lr[p.row] = p.lrs[step]
        self.optimizer.step(self._dev(lr), live_rows)

    def _group_loss(self, group: list[_Member], rows: list[int]) -> Tensor:
        """docs/design.md §2's loss of each member of a group whose batches have the same size: one
        vmapped forward, the terms vectorised over members (a zero-weight term is left out)."""
        n, size = len(group), len(group[0].rows)
        rows_d = self._dev(rows)
        xrows = self._dev(torch.cat([m.rows for m in group]))
        x = self.data.train_x[xrows].unflatten(0, (n, size))
        params, buffers = self._slice(rows)
        logits = self.train_fwd(params, buffers, x)  # [n, size, classes]
        with torch.no_grad():  # BN updated its running statistics on the copy: write them back
            for name, value in buffers.items():
                self.buffers[name].index_copy_(0, rows_d, value)
        loss = torch.zeros(n, device=self.device)
        kd_members = [i for i, m in enumerate(group) if m.kd_idx is not None]
        if kd_members:
            loss = loss + self._kd(group, kd_members, logits)
        if any(m.ce for m in group):
            y = self.data.train_y[xrows].view(n, size)
            ce = F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none")
            ce = ce.view(n, size).mean(1)
            weight = self.ce_weight.index_select(0, rows_d)
            mask = self._dev(torch.tensor([m.ce for m in group]))
            loss = loss + torch.where(mask, weight * ce, 0.0)
        return loss

    def _kd(self, group: list[_Member], members: list[int], logits: Tensor) -> Tensor:
        """α·T²·mean D(targets, p_s) for the members with a KD term, grouped by divergence and
        by teacher count (float64, as ``kd_term``); zero for the others."""
        out = torch.zeros(len(group), device=self.device)
        kinds: dict[tuple[str, int], list[int]] = {}
        for i in members:
            spec = group[i].plan.spec
            kinds.setdefault((spec.divergence, group[i].plan.targets.shape[0]), []).append(i)
        for (name, _), idx in kinds.items():
            plans = [group[i].plan for i in idx]
            trial_rows = self._dev([p.row for p in plans])
            temps = self.temps.index_select(0, trial_rows)
            log_q = torch.stack(
                [p.targets[:, self._dev(group[i].kd_idx)] for i, p in zip(idx, plans, strict=True)]
            )  # [m, K', size, classes]
            z = logits.index_select(0, self._dev(idx)).double() / temps.view(-1, 1, 1)
            log_p = torch.log_softmax(z, dim=-1)
            per_row = get_divergence(name)(log_q, log_p.unsqueeze(1)).sum(1)
            kd = (temps * temps * per_row.mean(1)).to(torch.float32)
            alpha = self.alpha.index_select(0, trial_rows)
            out = out.index_add(0, self._dev(idx), alpha * kd)
        return out

    def _slice(self, rows: list[int]) -> tuple[dict, dict]:
        """The stacked parameters (all of them without a copy) and a copy of the buffers of
        ``rows``. Buffers are always copied: autograd keeps the BN buffers a forward used, and
        the next forward's running-statistics update would otherwise change them in place."""
        rows_d = self._dev(rows)
        params = self.params
        if rows != list(range(len(self.plans))):
            params = {k: v.index_select(0, rows_d) for k, v in self.params.items()}
        return params, {k: v.index_select(0, rows_d) for k, v in self.buffers.items()}

    # -- evaluation -----------------------------------------------------------------------------

    def _evaluate(self, due: list[_Plan], step: int) -> None:
        """The evaluation points reached at ``step``: one vmapped pass per test set."""
        if not due:
            return
        self.base.eval()
        for final in (False, True):
            plans = [p for p in due if (p.eval_at[step] == p.points) == final]
            if not plans:
                continue
            logits = self._predict(plans, self.sets.inputs(final))
            for p, z in zip(plans, logits, strict=True):
                self._report(p, z, step)

    @torch.no_grad()
    def _predict(self, plans: list[_Plan], x: Tensor) -> Tensor:
        """The float32 logits of the students of ``plans`` (eval mode) on all of ``x``."""
        params, buffers = self._slice([p.row for p in plans])
        chunks = [self.eval_fwd(params, buffers, xb) for xb in x.split(self.recipe.eval_batch_size)]
        return torch.cat(chunks, dim=1).float()  # [trials, n, classes]

    def _report(self, p: _Plan, logits: Tensor, step: int) -> None:
        """The trial's point at ``step`` from its ``logits``, as run_trial's (``eval_point``);
        an exception there ends this trial alone, its last point ends it with its result."""
        s = p.spec
        measure = functools.partial(p.evaluator.score, p.eval_at[step], p.points, step, [logits])
        try:
            point = eval_point(measure, self.nonfinite[p.row], step=step, total=p.total,
                               context=p.context, on_eval=s.on_eval)  # fmt: skip
        except Exception as exc:
            p.done, self.outcomes[p.slot] = True, exc
            return
        if point.final:
            p.done = True
            self.outcomes[p.slot] = TrialResult.after_round(
                self.bundle, s.student, s.teachers, p.evaluator.final, started=self.started,
                steps=p.total, device=self.device,
            )  # fmt: skip


class _GlobalMeanPool(torch.nn.Module):
    """``AdaptiveAvgPool2d(1)`` as a mean: vmap has no batching rule for the ``as_strided_`` the
    adaptive pool uses on channels_last inputs and would loop over the trials instead."""

    def forward(self, x: Tensor) -> Tensor:
        """The mean over the spatial dimensions, kept as 1×1."""
        return x.mean((2, 3), keepdim=True)


def _vmap_friendly(module: torch.nn.Module) -> torch.nn.Module:
    """The skeleton with its global average pools (ResNet's) replaced by ``_GlobalMeanPool``;
    neither has parameters, so the stacked state dicts still fit."""
    for name, child in list(module.named_children()):
        size = getattr(child, "output_size", None)
        if isinstance(child, torch.nn.AdaptiveAvgPool2d) and size in (1, (1, 1)):
            setattr(module, name, _GlobalMeanPool())
        else:
            _vmap_friendly(child)
    return module


def _by_size(members: list[_Member]) -> list[list[_Member]]:
    """Members grouped by batch size (vmap needs equal shapes; most steps give one group)."""
    groups: dict[int, list[_Member]] = {}
    for m in members:
        groups.setdefault(len(m.rows), []).append(m)
    return list(groups.values())


class _StackedOptimizer:
    """``optim.KDOptimizer``'s SGD (Nesterov when momentum > 0) or Adam over stacked parameters,
    with a learning rate per trial: a row whose lr is masked out (a finished trial) is left
    exactly as it was, momentum included. Same update formulas as torch.optim's."""

    def __init__(self, params: dict[str, Tensor], recipe: KDRecipe, trials: int) -> None:
        """Optimise ``params`` (stacked over ``trials``) by ``recipe``; no state until a step."""
        self.params, self.recipe, self.trials = params, recipe, trials
        self.state: dict[str, dict[str, Tensor]] = {k: {} for k in params}
        self.steps = 0

    def zero_grad(self) -> None:
        """Drop the gradients (as ``set_to_none``), so the next backward writes fresh ones."""
        for p in self.params.values():
            p.grad = None

    @torch.no_grad()
    def step(self, lr: Tensor, live_rows: Tensor) -> None:
        """Update the rows ``live_rows`` with their rates ``lr`` [trials]; the others keep all."""
        r = self.recipe
        self.steps += 1
        live = torch.zeros(self.trials, dtype=torch.bool, device=lr.device)
        live[live_rows] = True
        for name, p in self.params.items():
            if p.grad is None:
                continue
            shape = (-1,) + (1,) * (p.dim() - 1)
            mask, rate = live.view(shape), lr.view(shape)
            g = p.grad if r.weight_decay == 0 else p.grad.add(p, alpha=r.weight_decay)
            st = self.state[name]
            if r.optimizer == "adam":
                update = self._adam(st, g, mask)
            elif r.momentum > 0:
                buf = st.get("momentum")
                buf = g.clone() if buf is None else torch.where(mask, buf * r.momentum + g, buf)
                st["momentum"] = buf
                update = g.add(buf, alpha=r.momentum)  # Nesterov, as KDOptimizer does
            else:
                update = g
            p.copy_(torch.where(mask, p - rate * update, p))

    def _adam(self, st: dict[str, Tensor], g: Tensor, mask: Tensor) -> Tensor:
        """Adam's bias-corrected step direction, the moments moved only on the ``mask`` rows."""
        # All live trials have taken the same number of steps (they start together and a row
        # leaves only when its trial ends), so one step count serves every row.
        beta1, beta2, eps = 0.9, 0.999, 1e-8
        m = st.get("exp_avg", torch.zeros_like(g))
        v = st.get("exp_avg_sq", torch.zeros_like(g))
        st["exp_avg"] = m = torch.where(mask, m.lerp(g, 1 - beta1), m)
        st["exp_avg_sq"] = v = torch.where(mask, v * beta2 + (1 - beta2) * g * g, v)
        bias1 = 1 - beta1**self.steps
        bias2_sqrt = math.sqrt(1 - beta2**self.steps)
        return (m / bias1) / (v.sqrt() / bias2_sqrt + eps)
