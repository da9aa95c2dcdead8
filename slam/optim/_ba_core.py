"""Numba core of :mod:`slam.optim.local_ba`: linearisation, Schur complement, LM loop.

Array layout (all C-contiguous): poses ``T`` (M,4,4), points ``X`` (P,3); per observation
``oc``/``op`` (O,) int64 camera/point index, ``uv`` (O,2), ``ur`` (O,), ``w`` (O,)
inv_sigma2; ``cam = [fx, fy, cx, cy, bf]``. ``order`` lists the active observations sorted
by point, ``pt_start`` (P+1,) delimits each point's run in ``order``. ``free_cam`` /
``free_pt`` map to the index among free variables (-1 = fixed).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from slam.optim.kernels import (
    CHI2_MONO,
    CHI2_STEREO,
    cholesky_solve_into,
    left_update_into,
    residual_jacobians_into,
    robust_chi2,
)


@njit(cache=True, nogil=True, fastmath=False)
def _inv3_sym_into(V, p, lam, Vinv):
    """``Vinv[p] = inv(V[p] + lam I)`` for symmetric 3x3 blocks; zero if (near) singular."""
    a, b, c = V[p, 0, 0] + lam, V[p, 0, 1], V[p, 0, 2]
    d, e, f = V[p, 1, 1] + lam, V[p, 1, 2], V[p, 2, 2] + lam
    c00 = d * f - e * e
    c01 = c * e - b * f
    c02 = b * e - c * d
    det = a * c00 + b * c01 + c * c02
    scale = abs(a) + abs(d) + abs(f)
    if not (det > 1e-14 * scale * scale * scale and math.isfinite(det)):
        for i in range(3):
            for j in range(3):
                Vinv[p, i, j] = 0.0
        return
    inv = 1.0 / det
    Vinv[p, 0, 0] = c00 * inv
    Vinv[p, 0, 1] = Vinv[p, 1, 0] = c01 * inv
    Vinv[p, 0, 2] = Vinv[p, 2, 0] = c02 * inv
    Vinv[p, 1, 1] = (a * f - c * c) * inv
    Vinv[p, 1, 2] = Vinv[p, 2, 1] = (b * c - a * e) * inv
    Vinv[p, 2, 2] = (a * d - b * b) * inv


@njit(cache=True, nogil=True, fastmath=False)
def total_cost(T, X, oc, op, uv, ur, w, cam, order, huber):
    """Robust cost of the observations listed in ``order``."""
    e = np.zeros(3)
    Jc = np.zeros((3, 6))
    Jp = np.zeros((3, 3))
    cost = 0.0
    for o in order:
        stereo = ur[o] >= 0.0
        if residual_jacobians_into(T, oc[o], X, op[o], cam, uv[o, 0], uv[o, 1], ur[o],
                                   stereo, e, Jc, Jp, False):
            cost += robust_chi2(e[0], e[1], e[2], stereo, w[o], huber)[1]
    return cost


@njit(cache=True, nogil=True, fastmath=False)
def _linearize(T, X, oc, op, uv, ur, w, cam, order, free_cam, free_pt, huber,
               U, bc, V, bp, Wt, ok):
    """Accumulate camera blocks ``U``/``bc``, point blocks ``V``/``bp`` and couplings ``Wt``.

    ``Wt`` (O,3,6) holds each observation's ``(J_c^T w J_p)^T`` (transposed so that the
    Schur loops read it contiguously).

    ``b`` is ``-J^T W e``. Sets ``ok[o]`` for observations that contribute. Returns the cost.
    """
    U[:] = 0.0
    bc[:] = 0.0
    V[:] = 0.0
    bp[:] = 0.0
    e = np.zeros(3)
    Jc = np.zeros((3, 6))
    Jp = np.zeros((3, 3))
    cost = 0.0
    for o in order:
        stereo = ur[o] >= 0.0
        ok[o] = residual_jacobians_into(T, oc[o], X, op[o], cam, uv[o, 0], uv[o, 1], ur[o],
                                        stereo, e, Jc, Jp, True)
        if not ok[o]:
            continue
        _chi2, rho, wt = robust_chi2(e[0], e[1], e[2], stereo, w[o], huber)
        cost += rho
        rows = 3 if stereo else 2
        c = free_cam[oc[o]]
        p = free_pt[op[o]]
        for r in range(rows):
            we = wt * e[r]
            if c >= 0:
                for i in range(6):
                    wj = wt * Jc[r, i]
                    bc[c, i] -= Jc[r, i] * we
                    for j in range(i + 1):
                        U[c, i, j] += wj * Jc[r, j]
                    if p >= 0:
                        for j in range(3):
                            Wt[o, j, i] = (Wt[o, j, i] if r > 0 else 0.0) + wj * Jp[r, j]
            if p >= 0:
                for i in range(3):
                    wj = wt * Jp[r, i]
                    bp[p, i] -= Jp[r, i] * we
                    for j in range(i + 1):
                        V[p, i, j] += wj * Jp[r, j]
    for c in range(U.shape[0]):  # mirror the lower triangles
        for i in range(6):
            for j in range(i):
                U[c, j, i] = U[c, i, j]
    for p in range(V.shape[0]):
        for i in range(3):
            for j in range(i):
                V[p, j, i] = V[p, i, j]
    return cost


@njit(cache=True, nogil=True, fastmath=False)
def _reduced_system(oc, op, order, pt_start, free_cam, free_pt, lam, U, bc, V, bp, Wt, ok,
                    Vinv, Y, S, rhs):
    """Build ``S = U + lam I - sum W Vinv W^T`` (lower triangle) and its right-hand side."""
    nc = U.shape[0]
    for c in range(nc):
        for i in range(6):
            rhs[6 * c + i] = bc[c, i]
            for j in range(6):
                S[6 * c + i, 6 * c + j] = U[c, i, j]
            S[6 * c + i, 6 * c + i] += lam
    for c1 in range(nc):  # clear the off-diagonal blocks
        for c2 in range(c1):
            for i in range(6):
                for j in range(6):
                    S[6 * c1 + i, 6 * c2 + j] = 0.0
    for pt in range(pt_start.shape[0] - 1):
        p = free_pt[pt]
        if p < 0:
            continue
        _inv3_sym_into(V, p, lam, Vinv)
        for a in range(pt_start[pt], pt_start[pt + 1]):
            o1 = order[a]
            c1 = free_cam[oc[o1]]
            if c1 < 0 or not ok[o1]:
                continue
            for i in range(6):
                for k in range(3):
                    Y[o1, i, k] = Wt[o1, 0, i] * Vinv[p, 0, k] + Wt[o1, 1, i] * Vinv[p, 1, k] \
                        + Wt[o1, 2, i] * Vinv[p, 2, k]
                rhs[6 * c1 + i] -= Y[o1, i, 0] * bp[p, 0] + Y[o1, i, 1] * bp[p, 1] \
                    + Y[o1, i, 2] * bp[p, 2]
            for b in range(pt_start[pt], pt_start[pt + 1]):
                o2 = order[b]
                c2 = free_cam[oc[o2]]
                if c2 < 0 or c2 > c1 or not ok[o2]:
                    continue
                for i in range(6):
                    y0, y1, y2 = Y[o1, i, 0], Y[o1, i, 1], Y[o1, i, 2]
                    row = 6 * c1 + i
                    for j in range(6):
                        S[row, 6 * c2 + j] -= y0 * Wt[o2, 0, j] + y1 * Wt[o2, 1, j] \
                            + y2 * Wt[o2, 2, j]


@njit(cache=True, nogil=True, fastmath=False)
def _back_substitute(oc, order, pt_start, free_cam, free_pt, bp, Wt, ok, Vinv, dxc, dxp):
    """Point updates ``dxp = Vinv (bp - sum W^T dxc)`` (in ``dxp``, (P_free,3))."""
    r = np.zeros(3)
    for pt in range(pt_start.shape[0] - 1):
        p = free_pt[pt]
        if p < 0:
            continue
        r[:] = bp[p]
        for a in range(pt_start[pt], pt_start[pt + 1]):
            o = order[a]
            c = free_cam[oc[o]]
            if c < 0 or not ok[o]:
                continue
            for k in range(3):
                s = 0.0
                for i in range(6):
                    s += Wt[o, k, i] * dxc[6 * c + i]
                r[k] -= s
        for k in range(3):
            dxp[p, k] = Vinv[p, k, 0] * r[0] + Vinv[p, k, 1] * r[1] + Vinv[p, k, 2] * r[2]


@njit(cache=True, nogil=True, fastmath=False)
def _apply(T, X, free_cam, free_pt, dxc, dxp, T_new, X_new, tmp):
    """``T_new = exp(dxc) T`` for free cameras, ``X_new = X + dxp`` for free points."""
    T_new[:] = T
    X_new[:] = X
    for m in range(T.shape[0]):
        c = free_cam[m]
        if c >= 0:
            left_update_into(T[m], dxc[6 * c:6 * c + 6], tmp, T_new[m])
    for pt in range(X.shape[0]):
        p = free_pt[pt]
        if p >= 0:
            for k in range(3):
                X_new[pt, k] += dxp[p, k]


@njit(cache=True, nogil=True, fastmath=False)
def _step_scale(lam, bc, bp, dxc, dxp):
    """g2o's ``computeScale``: ``dx . (lam dx + b)`` (+1e-3)."""
    s = 1e-3
    for c in range(bc.shape[0]):
        for i in range(6):
            d = dxc[6 * c + i]
            s += d * (lam * d + bc[c, i])
    for p in range(bp.shape[0]):
        for k in range(3):
            d = dxp[p, k]
            s += d * (lam * d + bp[p, k])
    return s


@njit(cache=True, nogil=True, fastmath=False)
def lm_schur(T, X, oc, op, uv, ur, w, cam, order, pt_start, free_cam, free_pt,
             iterations, huber, abort_flag, min_rel_decrease):
    """Levenberg-Marquardt on ``T`` and ``X`` in place.

    Returns ``(initial_cost, final_cost, iterations_done, aborted)``.
    """
    nc = 0
    for m in range(free_cam.shape[0]):
        nc += free_cam[m] >= 0
    npf = 0
    for pt in range(free_pt.shape[0]):
        npf += free_pt[pt] >= 0
    O = oc.shape[0]
    U, bc = np.zeros((nc, 6, 6)), np.zeros((nc, 6))
    V, bp = np.zeros((npf, 3, 3)), np.zeros((npf, 3))
    Vinv = np.zeros((npf, 3, 3))
    Wt, Y = np.zeros((O, 3, 6)), np.zeros((O, 6, 3))
    ok = np.zeros(O, dtype=np.bool_)
    S, dxc = np.zeros((6 * nc, 6 * nc)), np.zeros(6 * nc)
    dxp = np.zeros((npf, 3))
    T_new, X_new, tmp = np.empty_like(T), np.empty_like(X), np.empty((4, 4))
    cost = total_cost(T, X, oc, op, uv, ur, w, cam, order, huber)
    initial_cost = cost
    lam, nu = 0.0, 2.0
    done = 0
    for it in range(iterations):
        if abort_flag[0] != 0:
            return initial_cost, cost, done, True
        cost = _linearize(T, X, oc, op, uv, ur, w, cam, order, free_cam, free_pt, huber,
                          U, bc, V, bp, Wt, ok)
        if it == 0:
            lam = 0.0
            for c in range(nc):
                for i in range(6):
                    lam = max(lam, abs(U[c, i, i]))
            for p in range(npf):
                for k in range(3):
                    lam = max(lam, abs(V[p, k, k]))
            lam *= 1e-5
            nu = 2.0
        accepted, converged = False, False
        for _trial in range(10):
            if abort_flag[0] != 0:
                return initial_cost, cost, done, True
            _reduced_system(oc, op, order, pt_start, free_cam, free_pt, lam, U, bc, V, bp, Wt,
                            ok, Vinv, Y, S, dxc)
            solved = cholesky_solve_into(S, dxc, 6 * nc)
            new_cost = np.inf
            if solved:
                _back_substitute(oc, order, pt_start, free_cam, free_pt, bp, Wt, ok, Vinv,
                                 dxc, dxp)
                _apply(T, X, free_cam, free_pt, dxc, dxp, T_new, X_new, tmp)
                new_cost = total_cost(T_new, X_new, oc, op, uv, ur, w, cam, order, huber)
            rho = -1.0
            if solved and math.isfinite(new_cost):
                rho = (cost - new_cost) / _step_scale(lam, bc, bp, dxc, dxp)
            if rho > 0.0:
                alpha = min(1.0 - (2.0 * rho - 1.0) ** 3, 2.0 / 3.0)
                lam *= max(1.0 / 3.0, alpha)
                nu = 2.0
                converged = cost - new_cost < min_rel_decrease * cost
                cost = new_cost
                T[:] = T_new
                X[:] = X_new
                accepted = True
                break
            lam *= nu
            nu *= 2.0
            if not math.isfinite(lam):
                break
        done += 1
        if not accepted or converged:
            break
    return initial_cost, cost, done, False


@njit(cache=True, nogil=True, fastmath=False)
def classify_observations(T, X, oc, op, uv, ur, w, cam, chi2, valid, inlier):
    """Per observation: ``chi2``, depth ``valid`` and ``inlier`` (chi2 test and valid)."""
    e = np.zeros(3)
    Jc = np.zeros((3, 6))
    Jp = np.zeros((3, 3))
    for o in range(oc.shape[0]):
        stereo = ur[o] >= 0.0
        valid[o] = residual_jacobians_into(T, oc[o], X, op[o], cam, uv[o, 0], uv[o, 1],
                                           ur[o], stereo, e, Jc, Jp, False)
        chi2[o] = robust_chi2(e[0], e[1], e[2], stereo, w[o], False)[0] if valid[o] else np.inf
        inlier[o] = valid[o] and chi2[o] <= (CHI2_STEREO if stereo else CHI2_MONO)
