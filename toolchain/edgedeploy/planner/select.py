"""Primitive selection: one option per layer per core configuration, layout conversions included.

The problem is PBQP-shaped (Anderson & Gregg, "Optimal DNN primitive selection with partitioned
boolean quadratic programming", CGO 2018): node cost = a primitive's time, edge cost = the layout
conversion a producer/consumer pair of options implies. The solver applies the PBQP reductions of
Scholz & Eckstein (2002): R0 (isolated node), RI (degree one: fold into the neighbour -- on a chain
this *is* the exact Viterbi dynamic programme), RII (degree two: fold into an edge between the two
neighbours -- exact on series-parallel graphs such as residual blocks), and RN for what remains:
exact branching on the highest-degree node while a small branch budget lasts, then the classic
heuristic (pick the locally best option). Every array carries a trailing configuration axis, so all
core configurations are solved in one pass.

Graph inputs arrive and graph outputs leave in the model's own layout (``Tensor.edge_layout``:
NHWC for a .tflite model's rank-4 ones, else NCHW; the runner's contract), so an option whose
layouts differ pays a conversion there too. Conversions are attributed to the consumer (input
side) or producer (graph outputs), so per-layer times sum to the total and stages can be priced by
prefix sums.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from edgedeploy.errors import InfeasibleError
from edgedeploy.planner.problem import Problem, primitive_matches

#: RN branches explored exactly before falling back to the heuristic.
BRANCH_BUDGET = 64


@dataclass
class Selection:
    """Per configuration ``c``: ``choice[l, c]`` (option index) and ``layer_ms[l, c]``."""

    choice: np.ndarray
    layer_ms: np.ndarray
    exact: bool

    @property
    def total_ms(self) -> np.ndarray:
        return self.layer_ms.sum(axis=0)


def option_mask(problem: Problem, allow: Sequence[str] = (), deny: Sequence[str] = (),
                max_workspace_bytes: float | None = None) -> list[np.ndarray]:
    """Which options each layer may use; InfeasibleError names a layer left with none.

    ``allow`` restricts convolution primitives (``onnxruntime`` and ``native`` stay available unless
    listed in ``deny``); ``max_workspace_bytes`` bounds each primitive's scratch memory, as TASO
    bounds its substitutions' memory.
    """
    masks = []
    for layer in problem.layers:
        m = np.ones(len(layer.options), dtype=bool)
        for o, name in enumerate(layer.options):
            denied = bool(deny) and primitive_matches(name, deny)
            not_allowed = bool(allow) and "/" in name and not primitive_matches(name, allow)
            too_big = (max_workspace_bytes is not None
                       and layer.workspace_bytes[o] > max_workspace_bytes)
            m[o] = not (denied or not_allowed or too_big)
        if not m.any():
            why = []
            if allow or deny:
                why.append("primitives allow/deny lists")
            if max_workspace_bytes is not None:
                best = min(layer.workspace_bytes) / 2**20
                why.append(f"constraints.max_memory_mb (best reachable for this layer: "
                           f"{best:.3g} MB of workspace)")
            raise InfeasibleError(
                f"layer {layer.name!r} has no usable primitive under {' and '.join(why)}",
                hint=f"its options: {', '.join(layer.options)}")
        masks.append(m)
    return masks


def node_costs(problem: Problem, masks: list[np.ndarray]) -> list[np.ndarray]:
    """(n_options, n_configs) per layer: time, inf where masked, plus graph-boundary conversions."""
    costs = []
    for layer, m in zip(problem.layers, masks, strict=True):
        c = np.where(m[:, None], layer.ms, np.inf).astype(np.float64)
        costs.append(c)
    for k, t in enumerate(problem.tensors):
        conv = problem.layout_ms[k]
        if t.producer < 0:
            for v in t.consumers:
                bad = np.array([lay != t.edge_layout for lay in problem.layers[v].layout_in])
                costs[v] = costs[v] + bad[:, None] * conv[None, :]
        if t.is_output and t.producer >= 0:
            u = t.producer
            bad = np.array([lay != t.edge_layout for lay in problem.layers[u].layout_out])
            costs[u] = costs[u] + bad[:, None] * conv[None, :]
    return costs


def edge_matrix(problem: Problem, u: int, v: int, tensor: int) -> np.ndarray:
    """(n_u, n_v, n_configs) conversion cost of tensor ``tensor`` between options of u and v."""
    lu = problem.layers[u].layout_out
    lv = problem.layers[v].layout_in
    bad = np.array([[a != b for b in lv] for a in lu], dtype=np.float64)
    return bad[:, :, None] * problem.layout_ms[tensor][None, None, :]


def layer_times(problem: Problem, choice: np.ndarray) -> np.ndarray:
    """(n_layers, n_configs) time of a given choice, conversions attributed as documented above."""
    n_cfg = len(problem.configs)
    cols = np.arange(n_cfg)
    out = np.stack([layer.ms[choice[i], cols] for i, layer in enumerate(problem.layers)])
    for k, t in enumerate(problem.tensors):
        conv = problem.layout_ms[k]
        out_lay = (np.array(problem.layers[t.producer].layout_out)[choice[t.producer]]
                   if t.producer >= 0 else np.full(n_cfg, t.edge_layout))
        for v in t.consumers:
            in_lay = np.array(problem.layers[v].layout_in)[choice[v]]
            out[v] += (out_lay != in_lay) * conv
        if t.is_output and t.producer >= 0:
            out[t.producer] += (out_lay != t.edge_layout) * conv
    return out


def select(problem: Problem, allow: Sequence[str] = (), deny: Sequence[str] = (),
           max_workspace_bytes: float | None = None,
           branch_budget: int = BRANCH_BUDGET) -> Selection:
    """The cheapest option per layer for every configuration at once (see module docstring)."""
    masks = option_mask(problem, allow, deny, max_workspace_bytes)
    costs = node_costs(problem, masks)
    edges: dict[tuple[int, int], np.ndarray] = {}
    for u, v, k in problem.edges():
        m = edge_matrix(problem, u, v, k)
        edges[(u, v)] = edges[(u, v)] + m if (u, v) in edges else m
    solver = _Pbqp(branch_budget)
    choice = solver.solve(costs, edges, problem, len(problem.configs))
    return Selection(choice, layer_times(problem, choice), exact=solver.exact)


class _Pbqp:
    """Reduction-based PBQP solver vectorised over a trailing configuration axis."""

    def __init__(self, branch_budget: int) -> None:
        self.budget = branch_budget
        self.exact = True

    def solve(self, costs: list[np.ndarray], edges: dict[tuple[int, int], np.ndarray],
              problem: Problem, n_cfg: int) -> np.ndarray:
        self.cols = np.arange(n_cfg)
        choice = self._solve(dict(enumerate(costs)), dict(edges))
        return np.stack([choice[i] for i in range(len(problem.layers))])

    def _solve(self, costs: dict[int, np.ndarray],
               edges: dict[tuple[int, int], np.ndarray]) -> dict[int, np.ndarray]:
        """Choices (one per configuration) for every node of this (sub-)problem."""
        costs = dict(costs)
        edges = dict(edges)
        adj: dict[int, set[int]] = {u: set() for u in costs}
        for u, v in edges:
            adj[u].add(v)
            adj[v].add(u)
        heap = [u for u in costs if len(adj[u]) <= 2]
        heapq.heapify(heap)
        stack: list[tuple] = []
        known: dict[int, np.ndarray] = {}
        while costs:
            while heap and (heap[0] not in costs or len(adj[heap[0]]) > 2):
                heapq.heappop(heap)
            if not heap:
                known = self._branch(costs, edges, adj)
                break
            u = heapq.heappop(heap)
            for v in self._reduce(u, costs, edges, adj, stack):
                if len(adj[v]) <= 2:
                    heapq.heappush(heap, v)
        return self._backtrack(stack, known)

    def _reduce(self, u: int, costs, edges, adj, stack) -> list[int]:
        nbrs = sorted(adj[u])
        cu = costs.pop(u)
        if not nbrs:  # R0
            stack.append(("R0", u, cu.argmin(axis=0)))
        elif len(nbrs) == 1:  # RI: c_v[j] += min_i c_u[i] + M[i, j]
            v = nbrs[0]
            total = cu[:, None, :] + _oriented(edges, u, v)
            costs[v] = costs[v] + total.min(axis=0)
            stack.append(("RI", u, v, total.argmin(axis=0)))
        else:  # RII: M_vw[j, k] += min_i c_u[i] + M_uv[i, j] + M_uw[i, k]
            v, w = nbrs
            total = (cu[:, None, None, :] + _oriented(edges, u, v)[:, :, None, :]
                     + _oriented(edges, u, w)[:, None, :, :])
            delta = total.min(axis=0)
            edges[(v, w)] = edges[(v, w)] + delta if (v, w) in edges else delta
            adj[v].add(w)
            adj[w].add(v)
            stack.append(("RII", u, v, w, total.argmin(axis=0)))
        for v in nbrs:
            edges.pop((min(u, v), max(u, v)), None)
            adj[v].discard(u)
        del adj[u]
        return nbrs

    def _branch(self, costs, edges, adj) -> dict[int, np.ndarray]:
        """RN: branch exactly on the max-degree node while budget lasts, else fix it greedily."""
        u = max(sorted(costs), key=lambda n: len(adj[n]))
        n_opt = costs[u].shape[0]
        if self.budget >= n_opt:
            self.budget -= n_opt
            best: dict[int, np.ndarray] = {}
            best_cost = np.full(len(self.cols), np.inf)
            for i in range(n_opt):
                fixed = np.full(len(self.cols), i)
                sub_costs, sub_edges = self._fix(u, fixed, costs, edges, adj)
                choice = self._solve(sub_costs, sub_edges)
                cost = costs[u][i] + self._value(sub_costs, sub_edges, choice)
                better = (cost < best_cost) if best else np.ones(len(self.cols), dtype=bool)
                choice[u] = fixed
                best = {n: np.where(better, choice[n], best[n]) if best else choice[n]
                        for n in choice}
                best_cost = np.where(better, cost, best_cost)
            return best
        self.exact = False
        local = costs[u].copy()
        for v in adj[u]:
            local += (_oriented(edges, u, v) + costs[v][None, :, :]).min(axis=1)
        fixed = local.argmin(axis=0)
        choice = self._solve(*self._fix(u, fixed, costs, edges, adj))
        choice[u] = fixed
        return choice

    def _fix(self, u, fixed, costs, edges, adj):
        """Costs and edges with node u fixed to option ``fixed[c]`` on each configuration."""
        new_costs = {n: c for n, c in costs.items() if n != u}
        for v in adj[u]:
            m = _oriented(edges, u, v)  # (n_u, n_v, C)
            new_costs[v] = new_costs[v] + m[fixed, :, self.cols].T
        new_edges = {k: m for k, m in edges.items() if u not in k}
        return new_costs, new_edges

    def _value(self, costs, edges, choice) -> np.ndarray:
        cols = self.cols
        total = np.zeros(len(cols))
        for n, c in costs.items():
            total = total + c[choice[n], cols]
        for (a, b), m in edges.items():
            total = total + m[choice[a], choice[b], cols]
        return total

    def _backtrack(self, stack, known: dict[int, np.ndarray]) -> dict[int, np.ndarray]:
        choice = dict(known)
        cols = self.cols
        for entry in reversed(stack):
            kind, u = entry[0], entry[1]
            if kind == "R0":
                choice[u] = entry[2]
            elif kind == "RI":
                choice[u] = entry[3][choice[entry[2]], cols]
            else:
                choice[u] = entry[4][choice[entry[2]], choice[entry[3]], cols]
        return choice


def _oriented(edges: dict[tuple[int, int], np.ndarray], u: int, v: int) -> np.ndarray:
    """The edge matrix with u's options on axis 0."""
    if (u, v) in edges:
        return edges[(u, v)]
    return edges[(v, u)].transpose(1, 0, 2)
