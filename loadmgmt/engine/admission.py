"""Which sessions run this tick: shedding, rotation and anti-flapping.

A session runs only if its minimum current fits everywhere on its path together with the minimums
of the sessions already admitted. Candidates are admitted greedily, best first. Greedy best-first
admission is the same thing as "shed the worst until the rest fits, then re-admit the shed ones in
reverse order when they fit": the kept prefix is identical and the re-admission pass is the tail of
the greedy pass. So it sheds only as much as needed and a shed session never had room.

The order is what carries the promises:
1. priority mode: VIPs before everyone else (VIPs are shed last);
2. running sessions still inside their minimum on-time (the hold yields only to capacity);
3. between rotations: running sessions before paused ones (keep the current paused set; paused
   ones come back only into capacity that is left over);
4. the shedding policy (least energy first, or most recently connected first);
5. the session id, so ties are broken the same way every time.
At a rotation step 3 is dropped: the order is re-evaluated from scratch and paused sessions that
now rank better (less energy received while they waited) take their turn.
"""

from __future__ import annotations

from collections.abc import Sequence

from .model import Policy, Session

Pairs = tuple[tuple[int, int], ...]


def rotation_due(policy: Policy, now: float) -> bool:
    """A rotation is due on the first tick and whenever a full period has passed."""
    return policy.last_rotation_at is None or now - policy.last_rotation_at >= policy.rotation_period_s


def min_on_hold(session: Session, policy: Policy, now: float) -> bool:
    """A running session that started too recently to be paused without a capacity reason."""
    return not session.paused and now - session.state_since < policy.min_on_s


def min_off_hold(session: Session, policy: Policy, now: float) -> bool:
    """A paused session that stopped too recently to be started again (anti-flapping)."""
    return session.paused and now - session.state_since < policy.min_off_s


def admission_key(session: Session, policy: Policy, now: float, rotate: bool) -> tuple:
    """Sort key, best (admitted first, shed last) first; see the module docstring."""
    vip_rank = 1
    hold_rank = 0 if min_on_hold(session, policy, now) else 1
    state_rank = 0 if rotate or not session.paused else 1
    if policy.shedding == "energy":
        merit: tuple[float, float] = (session.energy_wh, -session.connected_at)
    else:
        merit = (-session.connected_at, session.energy_wh)
    return (vip_rank, hold_rank, state_rank, *merit, session.id)


def admit(
    order: Sequence[int], lo: Sequence[int], sig_of: Sequence[int], sig_pairs: Sequence[Pairs], cap: Sequence[int],
) -> tuple[list[int], dict[int, int]]:
    """Greedy admission at minimum current.

    Returns the admitted sessions (in admission order) and, for each rejected session, the
    constraint that had no room for its minimum. `sig_pairs` may be limited to the contested
    constraints: the others fit everyone anyway.
    """
    used = [0] * len(cap)
    running: list[int] = []
    blocked: dict[int, int] = {}
    for i in order:
        pairs = sig_pairs[sig_of[i]]
        need = lo[i]
        blocker = _first_full(pairs, need, used, cap)
        if blocker >= 0:
            blocked[i] = blocker
            continue
        for c, k in pairs:
            used[c] += k * need
        running.append(i)
    return running, blocked


def _first_full(pairs: Pairs, need: int, used: list[int], cap: Sequence[int]) -> int:
    """The first constraint that cannot take `need` more deci-amps, or -1 when all can."""
    for c, k in pairs:
        if used[c] + k * need > cap[c]:
            return c
    return -1
