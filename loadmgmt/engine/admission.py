"""Which sessions run this tick: shedding, rotation and anti-flapping.

A session runs only if its minimum current fits everywhere on its path together with the minimums
of the sessions already admitted. Candidates are admitted greedily, best first. Greedy best-first
admission is the same thing as "shed the worst until the rest fits, then re-admit the shed ones in
reverse order when they fit": the kept prefix is identical and the re-admission pass is the tail of
the greedy pass. So it sheds only as much as needed and a shed session never had room.

The order is what carries the promises:
1. priority mode: VIPs before everyone else (VIPs are shed last, so a VIP may take the place of
   a non-VIP still inside its minimum on-time);
2. running sessions still inside their minimum on-time (the hold yields only to capacity and VIPs);
3. between rotations: running sessions before paused ones (keep the current paused set; paused
   ones come back only into capacity that is left over);
4. the shedding policy (least energy first, or least time charged first: time connected, not
   counting the time spent paused, so that a paused car is overtaken and gets its turn);
5. the session id, so ties are broken the same way every time.
At a rotation step 3 is dropped: the order is re-evaluated from scratch and paused sessions that
now rank better (less energy received while they waited) take their turn.
"""

from __future__ import annotations

from collections.abc import Sequence

from .model import Policy, Session

Pairs = tuple[tuple[int, int], ...]


def rotation_due(policy: Policy, now: float) -> bool:
    """A rotation is due on the first tick and whenever a full period has passed.

    A clock that jumped back before the last rotation also counts as due; otherwise paused cars
    would wait for the clock to catch up (hours, after a bad NTP step) for their turn.
    """
    if policy.last_rotation_at is None:
        return True
    elapsed = now - policy.last_rotation_at
    return elapsed >= policy.rotation_period_s or elapsed < 0


def min_off_hold(session: Session, policy: Policy, now: float) -> bool:
    """A paused session that stopped too recently to be started again (anti-flapping)."""
    return session.paused and now - session.state_since < policy.min_off_s


def admission_order(
    sessions: Sequence[Session], candidates: list[int], policy: Policy, now: float, rotate: bool
) -> list[int]:
    """Candidates sorted best first (admitted first, shed last); see the module docstring.

    The three tier flags are packed into one small int and the key is built in a comprehension:
    this runs for every session on every tick where capacity is short.
    """
    priority = policy.mode == "priority"
    by_energy = policy.shedding == "energy"
    min_on_s = policy.min_on_s
    keys = {
        i: (
            (0 if priority and s.vip else 4)  # 1. VIPs first in priority mode
            + (0 if not s.paused and now - s.state_since < min_on_s else 2)  # 2. minimum on-time
            + (0 if rotate or not s.paused else 1),  # 3. between rotations: running first
            s.energy_wh if by_energy else _time_charged(s, now),  # 4. least energy / least time charged
            -s.connected_at if by_energy else s.energy_wh,
            s.id,  # 5. a stable tie-break
        )
        for i, s in ((i, sessions[i]) for i in candidates)
    }
    return sorted(candidates, key=keys.__getitem__)


def _time_charged(session: Session, now: float) -> float:
    return now - session.connected_at if session.charged_s is None else session.charged_s


def admit(
    order: Sequence[int],
    lo: Sequence[int],
    sig_of: Sequence[int],
    sig_pairs: Sequence[Pairs],
    cap: Sequence[int],
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
