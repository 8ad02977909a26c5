"""A 6-axis pick-and-place robot simulator: normal cycles and the voraus-AD anomaly types.

The voraus-AD data set (thesis ch. 7) may not be shipped, yet detectors, tests and
benchmarks need robot cycles with known anomalies. This simulator writes cycles
with the same structure: joint-space point-to-point moves (minimum-jerk) through a
scan, pick and place sequence whose pick position varies from cycle to cycle; rigid
-body torques from position-dependent inertia and gravity (shoulder, elbow and
wrist carry the arm and the payload), viscous plus Coulomb friction, a servo whose
tracking error follows the torque the feed-forward model did not expect, motor
current and voltage from the torque constant and the commutation angle, and sensor
noise. Signal names follow voraus-AD (``<signal>_<axis>``) so the same readers and
configs apply.

Anomalies (thesis Table 7.3, by physical cause): added axis weight, payload weight
change, lost payload, collisions with soft (foam), medium (cable) and stiff
(cardboard) objects, added axis friction, motor miscommutation, unstable base.
Everything is numpy with one seed: the same call gives the same cycles.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from flowedge.modalities.series_io import SignalTable, write_csv

AXES = 6
PER_AXIS = (
    "target_position",
    "target_velocity",
    "target_acceleration",
    "target_torque",
    "joint_position",
    "joint_velocity",
    "torque_sensor_a",
    "motor_iq",
    "motor_id",
    "motor_voltage",
    "power_motor_el",
)
SYSTEM = ("robot_current",)
SIGNALS = tuple(f"{name}_{axis}" for name in PER_AXIS for axis in range(1, AXES + 1)) + SYSTEM
UNITS = {"position": "rad", "velocity": "rad/s", "acceleration": "rad/s2", "torque": "Nm"}
ANOMALY_TYPES = (
    "axis_weight",
    "payload_weight",
    "lost_payload",
    "collision_foam",
    "collision_cable",
    "collision_cardboard",
    "axis_friction",
    "miscommutation",
    "unstable_base",
)
NORMAL = "normal"

_G = 9.81
_PAYLOAD = 0.241  # kg, the voraus can
_L2, _L3, _WRIST = 0.24, 0.21, 0.08  # m: upper arm, forearm, wrist to payload
_M2, _M3, _MW = 2.0, 1.2, 0.8  # kg
_J0 = np.array([0.08, 0.06, 0.02, 0.004, 0.004, 0.002])  # rotor + link inertia, kg m^2
_FV = np.array([1.2, 1.5, 0.9, 0.25, 0.25, 0.15])  # viscous friction, Nm s/rad
_FC = np.array([0.8, 1.0, 0.6, 0.15, 0.15, 0.1])  # Coulomb friction, Nm
_KP = np.array([3000.0, 3000.0, 2000.0, 600.0, 600.0, 400.0])  # servo stiffness, Nm/rad
_TORQUE_NOISE = np.array([0.05, 0.05, 0.04, 0.01, 0.01, 0.008])  # Nm
_A_MAX = np.array([3.0, 3.0, 4.0, 6.0, 6.0, 8.0])  # rad/s^2
_KT_GEAR, _R, _KE_GEAR = 8.0, 0.6, 6.0  # torque constant x gear (Nm/A), ohm, back-EMF (V s/rad)
_HOME = np.array([0.0, 0.9, -1.6, 0.0, 0.7, 0.0])
_SCAN = np.array([0.35, 0.7, -1.3, 0.0, 0.6, 0.0])
_PLACE = np.array([-0.9, 0.55, -1.1, 0.0, 0.55, 0.5])
_DOWN = np.array([0.0, -0.18, 0.2, 0.0, -0.02, 0.0])  # a vertical move in joint space


def _unit(signal: str) -> str:
    if signal.startswith(("motor_iq", "motor_id", "robot_current")):
        return "A"
    if signal.startswith("motor_voltage"):
        return "V"
    if signal.startswith("power"):
        return "W"
    return next((u for key, u in UNITS.items() if key in signal), "")


SIGNAL_UNITS = {s: _unit(s) for s in SIGNALS}


@dataclass(frozen=True)
class Regime:
    """An operating point of the cell, what a recipe changes: the product's weight in the
    gripper (the controller's feed-forward knows it) and the speed override (moves take
    1/speed as long; dwells stay)."""

    payload_kg: float = _PAYLOAD
    speed: float = 1.0


NOMINAL = Regime()


@dataclass(frozen=True)
class Anomaly:
    """One drawn anomaly: its type, the axis it acts on and its intensity (type-specific)."""

    kind: str = NORMAL
    axis: int = 0
    level: float = 0.0
    at: float = 0.5  # fraction of the cycle where time-local anomalies happen


def _min_jerk(q0: np.ndarray, q1: np.ndarray, n: int) -> tuple[np.ndarray, ...]:
    """Position, velocity and acceleration profiles (per unit time) of a minimum-jerk move."""
    s = np.linspace(0.0, 1.0, n)[:, None]
    pos = 10 * s**3 - 15 * s**4 + 6 * s**5
    vel = 30 * s**2 - 60 * s**3 + 30 * s**4
    acc = 60 * s - 180 * s**2 + 120 * s**3
    delta = (q1 - q0)[None, :]
    return q0 + pos * delta, vel * delta, acc * delta


def _trajectory(
    rng: np.random.Generator, rate_hz: float, speed: float = 1.0
) -> tuple[np.ndarray, ...]:
    """Target position, velocity, acceleration [N, 6] and the gripper's payload flag [N]."""
    pick = _HOME + np.array([rng.uniform(-0.45, 0.45), rng.uniform(-0.15, 0.15), 0, 0, 0, 0])
    pick[2] = -1.45 + 0.6 * (pick[1] - 0.9)
    pick[5] = rng.uniform(-0.6, 0.6)
    legs = [  # (target, dwell seconds after, carrying the payload during the move)
        (_SCAN, 0.5, False),
        (pick, 0.1, False),
        (pick + _DOWN, 0.3, False),
        (pick, 0.1, True),
        (_PLACE, 0.1, True),
        (_PLACE + _DOWN, 0.3, True),
        (_PLACE, 0.1, False),
        (_HOME, 0.2, False),
    ]
    q, parts = _HOME, []
    for target, dwell, carrying in legs:
        duration = max(0.4, float(np.max(np.sqrt(5.77 * np.abs(target - q) / _A_MAX)))) / speed
        n = max(2, round(duration * rate_hz))
        pos, vel, acc = _min_jerk(q, target, n)
        parts.append((pos, vel / duration, acc / duration**2, np.full(n, carrying)))
        hold = round(dwell * rate_hz)
        parts.append(
            (
                np.repeat(target[None], hold, 0),
                np.zeros((hold, AXES)),
                np.zeros((hold, AXES)),
                np.full(hold, carrying),
            )
        )
        q = target
    return tuple(np.concatenate([p[i] for p in parts]) for i in range(4))


def _dynamics(
    q: np.ndarray,
    qd: np.ndarray,
    qdd: np.ndarray,
    payload: np.ndarray,
    axis_mass: np.ndarray,
    friction: np.ndarray,
) -> np.ndarray:
    """Joint torques [N, 6]: inertia (reach-dependent), gravity on axes 2, 3, 5 and friction.

    ``payload`` [N] is the mass in the gripper, ``axis_mass`` [6] extra mass fixed at each
    axis, ``friction`` [6] a factor on the friction coefficients.
    """
    elbow = q[:, 1] + q[:, 2]
    wrist_mass = _MW + payload + axis_mass[3:].sum()
    reach = _L2 * np.cos(q[:, 1]) + (_L3 + _WRIST) * np.cos(elbow)
    inertia = np.tile(_J0, (len(q), 1))
    inertia[:, 0] += (_M3 + axis_mass[1:3].sum() + wrist_mass) * reach**2 + _M2 * (_L2 * 0.5) ** 2
    inertia[:, 1] += (_M3 + axis_mass[2]) * _L2**2 + wrist_mass * (_L2 + _L3) ** 2 * 0.8
    inertia[:, 2] += wrist_mass * _L3**2 + _M3 * (_L3 * 0.5) ** 2
    inertia[:, 3:] += payload[:, None] * _WRIST**2 + axis_mass[3:] * 0.05**2
    forearm = (_M3 + axis_mass[2]) * _L3 * 0.5 + wrist_mass * (_L3 + _WRIST)
    gravity = np.zeros_like(q)
    gravity[:, 1] = _G * (((_M2 * 0.5) + _M3 + axis_mass[2] + wrist_mass) * _L2 * np.cos(q[:, 1]))
    gravity[:, 1] += _G * forearm * np.cos(elbow)
    gravity[:, 2] = _G * forearm * np.cos(elbow)
    gravity[:, 4] = _G * (payload + axis_mass[4:].sum()) * _WRIST * np.cos(elbow + q[:, 4])
    fric = friction * (_FV * qd + _FC * np.tanh(qd / 0.02))
    return inertia * qdd + gravity + fric


def _contact(
    n: int, rate_hz: float, at: int, width_s: float, peak: float, bounce: bool
) -> np.ndarray:
    """An external torque pulse: a half sine (``width_s`` ~ object stiffness); cables swing back."""
    t = np.arange(n) / rate_hz
    t0 = at / rate_hz
    pulse = np.where((t >= t0) & (t < t0 + width_s), np.sin(np.pi * (t - t0) / width_s), 0.0)
    if bounce:
        t1 = t0 + 3 * width_s
        pulse -= 0.5 * np.where(
            (t >= t1) & (t < t1 + width_s), np.sin(np.pi * (t - t1) / width_s), 0
        )
    return peak * pulse


def draw_anomaly(kind: str, rng: np.random.Generator) -> Anomaly:
    """A random instance of anomaly ``kind`` (axis, intensity, time) like the thesis's variants."""
    if kind == NORMAL:
        return Anomaly()
    axis = int(rng.integers(0, AXES))
    level = {
        "axis_weight": float(rng.choice([0.115, 0.231, 0.5])),
        "payload_weight": float(rng.choice([0.041, 0.121, 0.161, 0.321, 0.361, 0.448])),
        "axis_friction": float(rng.choice([2.0, 3.0])),
        "miscommutation": float(rng.uniform(0.35, 0.6)),
        "unstable_base": float(rng.choice([1.0, 2.0, 3.0])),
    }.get(kind, 1.0)
    return Anomaly(kind, axis, level, float(rng.uniform(0.3, 0.75)))


def simulate_cycle(
    rng: np.random.Generator,
    anomaly: Anomaly = Anomaly(),
    rate_hz: float = 100.0,
    name: str = "",
    regime: Regime = NOMINAL,
) -> SignalTable:
    """One pick-and-place cycle with ``anomaly`` at operating point ``regime``, as a table of
    SIGNALS (plus ``active``)."""
    q, qd, qdd, carrying = _trajectory(rng, rate_hz, regime.speed)
    n = len(q)
    at = int(anomaly.at * n)
    product = np.where(carrying, regime.payload_kg, 0.0)
    payload = product.copy()
    axis_mass = np.zeros(AXES)
    friction = rng.normal(1.0, 0.03, AXES)  # temperature and lubrication, cycle to cycle
    commutation = np.zeros(AXES)
    external = np.zeros((n, AXES))
    kind, axis = anomaly.kind, anomaly.axis
    if kind == "axis_weight":
        axis_mass[axis] = anomaly.level
    elif kind == "payload_weight":  # the voraus levels, relative to the recipe's product
        payload = np.where(carrying, anomaly.level * (regime.payload_kg / _PAYLOAD), 0.0)
    elif kind == "lost_payload":
        carried = np.flatnonzero(carrying)
        payload[carried[int(anomaly.at * len(carried)) :]] = 0.0
    elif kind.startswith("collision"):
        width, peak, bounce = {
            "collision_foam": (0.35, 2.5, False),
            "collision_cable": (0.15, 3.0, True),
            "collision_cardboard": (0.06, 6.0, False),
        }[kind]
        lever = np.array([1.0, 0.8, 0.5, 0.1, 0.1, 0.05]) * rng.uniform(0.5, 1.0, AXES)
        external = _contact(n, rate_hz, at, width, peak, bounce)[:, None] * lever[None, :]
    elif kind == "axis_friction":
        friction[axis] *= anomaly.level
    elif kind == "miscommutation":
        commutation[axis] = anomaly.level
    elif kind == "unstable_base":
        t = np.arange(n) / rate_hz
        sway = np.sin(2 * np.pi * rng.uniform(6.0, 9.0) * t) * anomaly.level * 0.25
        external[:, :3] = sway[:, None] * (np.abs(qdd[:, :3]) + 0.2)

    nominal = _dynamics(q, qd, qdd, product, np.zeros(AXES), np.ones(AXES))
    torque = _dynamics(q, qd, qdd, payload, axis_mass, friction) + external
    # the servo absorbs what the feed-forward did not expect with a small, lagging position error
    error = (torque - nominal) / _KP
    kernel = np.exp(-np.arange(int(0.05 * rate_hz) + 1) / max(1.0, 0.02 * rate_hz))
    kernel /= kernel.sum()
    lagged = np.stack([np.convolve(error[:, j], kernel)[:n] for j in range(AXES)], axis=1)
    position = q + lagged + rng.normal(0, 2e-5, (n, AXES))
    velocity = np.gradient(position, 1.0 / rate_hz, axis=0) * 0.2 + qd * 0.8
    measured = torque + rng.normal(0, 1, (n, AXES)) * _TORQUE_NOISE
    iq = measured / (_KT_GEAR * np.cos(commutation)) + rng.normal(0, 0.005, (n, AXES))
    i_d = iq * np.tan(commutation) + rng.normal(0, 0.005, (n, AXES))
    voltage = _R * iq + _KE_GEAR * velocity + rng.normal(0, 0.05, (n, AXES))
    power = voltage * iq + _R * i_d**2
    per_axis = {
        "target_position": q,
        "target_velocity": qd,
        "target_acceleration": qdd,
        "target_torque": nominal,
        "joint_position": position,
        "joint_velocity": velocity,
        "torque_sensor_a": measured,
        "motor_iq": iq,
        "motor_id": i_d,
        "motor_voltage": voltage,
        "power_motor_el": power,
    }
    columns = {
        f"{key}_{j + 1}": values[:, j] for key, values in per_axis.items() for j in range(AXES)
    }
    columns["robot_current"] = 1.0 + 0.2 * np.abs(iq).sum(axis=1) + rng.normal(0, 0.01, n)
    columns["active"] = (np.abs(qd).sum(axis=1) > 1e-6).astype(np.float64)
    return SignalTable(
        name=name or kind,
        columns=columns,
        time_s=np.arange(n) / rate_hz,
        signals=SIGNALS,
        units=dict(SIGNAL_UNITS),
    )


@dataclass(frozen=True)
class SimulatedCycle:
    table: SignalTable
    kind: str  # NORMAL or one of ANOMALY_TYPES


def simulate_set(
    n_normal: int,
    n_per_anomaly: int,
    seed: int = 0,
    rate_hz: float = 100.0,
    kinds: tuple[str, ...] = ANOMALY_TYPES,
    regime: Regime = NOMINAL,
) -> list[SimulatedCycle]:
    """``n_normal`` normal cycles, then ``n_per_anomaly`` cycles of each anomaly type, all at
    operating point ``regime``."""
    rng = np.random.default_rng(seed)
    plan = [NORMAL] * n_normal + [k for k in kinds for _ in range(n_per_anomaly)]
    return [
        SimulatedCycle(
            simulate_cycle(rng, draw_anomaly(k, rng), rate_hz, f"{k}-{i:04d}", regime), k
        )
        for i, k in enumerate(plan)
    ]


def write_voraus_parquet(cycles: list[SimulatedCycle], path: str | Path) -> Path:
    """All cycles in one parquet file in the voraus-AD schema (``time`` per sample, meta columns)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    categories = {k: i for i, k in enumerate(ANOMALY_TYPES)} | {NORMAL: len(ANOMALY_TYPES)}
    parts: dict[str, list[np.ndarray]] = {}
    for number, cycle in enumerate(cycles):
        n = len(cycle.table)
        meta = {
            "time": cycle.table.times(),
            "sample": np.full(n, number, np.int64),
            "anomaly": np.full(n, cycle.kind != NORMAL),
            "category": np.full(n, categories[cycle.kind], np.int64),
            "setting": np.zeros(n, np.int64),
            "action": np.zeros(n, np.uint8),
        }
        for key, values in {**meta, **cycle.table.columns}.items():
            parts.setdefault(key, []).append(values)
    table = pa.table({key: np.concatenate(values) for key, values in parts.items()})
    pq.write_table(table, str(path))
    return Path(path)


def write_mvtec(
    root: str | Path,
    n_train: int,
    n_test_good: int,
    n_test_defect: int,
    seed: int = 0,
    rate_hz: float = 100.0,
    regime: Regime = NOMINAL,
) -> Path:
    """One CSV per cycle in MVTec layout (train/good, test/good, test/<anomaly type>), all at
    operating point ``regime``."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    plan = [("train", NORMAL, i) for i in range(n_train)]
    plan += [("test", NORMAL, i) for i in range(n_test_good)]
    plan += [("test", ANOMALY_TYPES[i % len(ANOMALY_TYPES)], i) for i in range(n_test_defect)]
    for split, kind, i in plan:
        folder = root / split / ("good" if kind == NORMAL else kind)
        folder.mkdir(parents=True, exist_ok=True)
        table = simulate_cycle(rng, draw_anomaly(kind, rng), rate_hz, regime=regime)
        write_csv(table, folder / f"{i:03d}.csv")
    return root
