"""Imaging "sequences": closed-form signal equations evaluated per tissue.

Each sequence is a small frozen dataclass whose init arguments ARE its config
(``to_config`` / ``from_config`` round-trip, diffusers-style). ``signal(props)`` maps the
per-label property arrays of :meth:`seg2med.labels.TissueTable.arrays` (``hu``, ``t1``,
``t2``, ``t2s``, ``pd``, ``ff`` plus the 0-d ``fat_t1``, ``fat_t2s``, ``fluid_t1``) to one
value per label id; it is vectorised over tissues and never touches voxels.

Units: times in ms, flip angles in degrees, field strength in tesla (1.5 or 3).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from seg2med.errors import ConfigError
from seg2med.labels.tissues import check_field_strength
from seg2med.physics.contrast import NATIVE, check_phase
from seg2med.physics.gadolinium import check_agent, load_gadolinium_table, shortened

#: Fat-water chemical shift (main methylene peak) in ppm.
FAT_SHIFT_PPM = -3.4
#: Proton gyromagnetic ratio / 2 pi in MHz/T.
GAMMA_BAR_MHZ_PER_T = 42.577


def fat_frequency_hz(field: float) -> float:
    """Fat resonance offset from water, Δf = -3.4 ppm × γ̄ × B0 (≈ -217 Hz at 1.5 T)."""
    return FAT_SHIFT_PPM * GAMMA_BAR_MHZ_PER_T * field


def in_phase_te(field: float) -> float:
    """First in-phase echo time in ms, 1/|Δf| (≈ 4.61 ms at 1.5 T, 2.30 ms at 3 T)."""
    return 1000.0 / abs(fat_frequency_hz(field))


def opposed_phase_te(field: float) -> float:
    """First opposed-phase echo time in ms, 1/(2|Δf|) (≈ 2.30 ms at 1.5 T, 1.15 ms at 3 T)."""
    return 500.0 / abs(fat_frequency_hz(field))


def spoiled_gre(pd: Any, t1: Any, t2s: Any, tr: float, te: float, flip: float) -> np.ndarray:
    """Spoiled gradient-echo steady state: PD·sinα·(1−E1)/(1−cosα·E1)·exp(−TE/T2*), E1 = exp(−TR/T1)."""
    a = math.radians(flip)
    e1 = np.exp(-tr / np.asarray(t1, dtype=np.float64))
    return np.asarray(pd) * math.sin(a) * (1.0 - e1) / (1.0 - math.cos(a) * e1) * np.exp(-te / np.asarray(t2s, dtype=np.float64))


def _prop(props: Mapping[str, np.ndarray], key: str, sequence: str) -> np.ndarray:
    try:
        return np.asarray(props[key], dtype=np.float64)
    except KeyError:
        raise ConfigError(f"sequence {sequence!r} needs tissue property {key!r}") from None


@dataclass(frozen=True)
class ImagingSequence:
    """Base class: a named, validated parameter set with a pure ``signal`` equation."""

    name: ClassVar[str] = ""
    modality: ClassVar[str] = ""
    #: parameters that may be None (resolved from the field strength or the tissue table)
    _optional: ClassVar[tuple[str, ...]] = ()
    #: parameters that are names, not numbers: parameter -> its check (returns the canonical name)
    _named: ClassVar[dict[str, Any]] = {}
    #: parameters that may be 0 (the others must be positive)
    _non_negative: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in self._named:
                object.__setattr__(self, f.name, self._named[f.name](value))
                continue
            if value is None and f.name in self._optional:
                continue
            low_ok = f.name in self._non_negative
            if (isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value)
                    or value < 0 or (value == 0 and not low_ok)):
                what = "a non-negative" if low_ok else "a positive"
                raise ConfigError(f"sequence {self.name!r}: {f.name} must be {what} number, got {value!r}")
            object.__setattr__(self, f.name, float(value))
        if "field" in self.parameters():
            object.__setattr__(self, "field", check_field_strength(self.field))  # type: ignore[attr-defined]
        if getattr(self, "flip", 0.0) > 180.0:
            raise ConfigError(f"sequence {self.name!r}: flip must be in (0, 180] degrees, got {self.flip}")  # type: ignore[attr-defined]
        tr = getattr(self, "tr", None)
        for echo in ("te", "te_in", "te_opp", "ti"):
            value = getattr(self, f"effective_{echo}", getattr(self, echo, None))
            if tr is not None and value is not None and value >= tr:
                raise ConfigError(f"sequence {self.name!r}: {echo} = {value:g} ms must be shorter than tr = {tr:g} ms")

    @classmethod
    def parameters(cls) -> tuple[str, ...]:
        """Names of the init parameters (= config keys besides ``name``)."""
        return tuple(f.name for f in dataclasses.fields(cls))

    def to_config(self) -> dict[str, Any]:
        """``{"name": ..., **parameters}``; :meth:`from_config` rebuilds an equal sequence."""
        return {"name": self.name, **{p: getattr(self, p) for p in self.parameters()}}

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "ImagingSequence":
        """Inverse of :meth:`to_config` (``name`` optional; unknown keys raise ConfigError)."""
        params = dict(config)
        name = params.pop("name", cls.name)
        if name != cls.name:
            raise ConfigError(f"config for sequence {name!r} given to {cls.name!r}")
        unknown = sorted(set(params) - set(cls.parameters()))
        if unknown:
            raise ConfigError(
                f"sequence {cls.name!r}: unknown parameter(s) {unknown} (known: {', '.join(cls.parameters()) or 'none'})"
            )
        return cls(**params)

    def signal(self, props: Mapping[str, np.ndarray]) -> np.ndarray:
        """Signal per tissue (same shape as the property arrays)."""
        raise NotImplementedError

    @property
    def uses_gadolinium(self) -> bool:
        """True when the sequence images after a gadolinium dose (``gd_dose`` > 0): its T1 reads the
        per-tissue ``gd_concentration`` property (mM at the standard dose, :mod:`seg2med.physics.gadolinium`)."""
        return float(getattr(self, "gd_dose", 0.0)) > 0.0

    def t1(self, props: Mapping[str, np.ndarray]) -> np.ndarray:
        """T1 (ms) per tissue as this sequence sees it: pre-contrast, or ``1/T1 = 1/T1₀ + r1·gd_dose·C``."""
        t1 = _prop(props, "t1", self.name)
        if not self.uses_gadolinium:
            return t1
        r1 = self.r1 if self.r1 is not None else load_gadolinium_table().relaxivity(self.agent, self.field)  # type: ignore[attr-defined]
        return shortened(t1, self.gd_dose * _prop(props, "gd_concentration", self.name), r1)  # type: ignore[attr-defined]


@dataclass(frozen=True)
class CT(ImagingSequence):
    """CT: the prior is the tissue's mean Hounsfield unit (HU).

    ``contrast_phase``: ``native`` (the tissue table's non-contrast values), ``arterial`` or
    ``portal_venous``: the per-label ``enhancement`` property (HU, see
    :mod:`seg2med.physics.contrast`) is added.
    """

    name: ClassVar[str] = "ct"
    modality: ClassVar[str] = "ct"
    _named: ClassVar[dict[str, Any]] = {"contrast_phase": check_phase}

    contrast_phase: str = NATIVE

    def signal(self, props: Mapping[str, np.ndarray]) -> np.ndarray:
        hu = _prop(props, "hu", self.name).copy()
        if self.contrast_phase == NATIVE:
            return hu
        return hu + _prop(props, "enhancement", f"{self.name} ({self.contrast_phase})")


#: Gadolinium parameters of the T1-weighted sequences: ``gd_dose`` (x the standard 0.1 mmol/kg; 0 = pre-contrast),
#: ``agent`` (its r1 from resources/gadolinium.yaml at the field strength) and ``r1`` (L/(mmol·s), overrides it).
_GD_NAMED: dict[str, Any] = {"agent": check_agent}


@dataclass(frozen=True)
class GRE(ImagingSequence):
    """Spoiled gradient echo (FLASH), T1-weighted, single compartment.

    ``S = PD·sinα·(1−E1)/(1−cosα·E1)·exp(−TE/T2*)``, ``E1 = exp(−TR/T1)``.
    Defaults: 1.5 T, 3-D T1w FLASH TR 10 ms, TE 4.6 ms (≈ in phase at 1.5 and 3 T), flip 15°, no gadolinium
    (``gd_dose`` > 0: T1 shortened as in :meth:`ImagingSequence.t1`).
    """

    name: ClassVar[str] = "gre"
    modality: ClassVar[str] = "mr"
    _optional: ClassVar[tuple[str, ...]] = ("r1",)
    _named: ClassVar[dict[str, Any]] = _GD_NAMED
    _non_negative: ClassVar[tuple[str, ...]] = ("gd_dose",)
    field: float = 1.5
    tr: float = 10.0
    te: float = 4.6
    flip: float = 15.0
    gd_dose: float = 0.0
    agent: str = "gadobutrol"
    r1: float | None = None

    def signal(self, props: Mapping[str, np.ndarray]) -> np.ndarray:
        p = {k: _prop(props, k, self.name) for k in ("pd", "t2s")}
        return spoiled_gre(p["pd"], self.t1(props), p["t2s"], self.tr, self.te, self.flip)


@dataclass(frozen=True)
class Mprage(ImagingSequence):
    """T1-weighted inversion-prepared 3-D gradient echo (MPRAGE-like), magnitude:

    ``S = PD·|1 − 2·exp(−TI/T1) + exp(−TR/T1)|·exp(−TE/T2*)`` — the inversion-recovery magnetisation at the centre
    of k-space, TR the time between inversions; the saturation by the readout train is not modelled (it lowers all
    signals and moves the null points to shorter TI). Defaults (1.5 T): TR 2000 ms, TI 1000 ms, TE 3 ms: white
    matter > grey matter > CSF. With ``gd_dose`` > 0 the T1 are shortened as in :meth:`ImagingSequence.t1`
    (post-contrast T1: the :class:`T1ce` defaults).
    """

    name: ClassVar[str] = "mprage"
    modality: ClassVar[str] = "mr"
    _optional: ClassVar[tuple[str, ...]] = ("r1",)
    _named: ClassVar[dict[str, Any]] = _GD_NAMED
    _non_negative: ClassVar[tuple[str, ...]] = ("gd_dose",)
    field: float = 1.5
    tr: float = 2000.0
    ti: float = 1000.0
    te: float = 3.0
    gd_dose: float = 0.0
    agent: str = "gadobutrol"
    r1: float | None = None

    def signal(self, props: Mapping[str, np.ndarray]) -> np.ndarray:
        pd, t2s = _prop(props, "pd", self.name), _prop(props, "t2s", self.name)
        t1 = self.t1(props)
        return pd * np.abs(1.0 - 2.0 * np.exp(-self.ti / t1) + np.exp(-self.tr / t1)) * np.exp(-self.te / t2s)


@dataclass(frozen=True)
class T1ce(Mprage):
    """Post-contrast T1 (T1ce / T1-Gd): :class:`Mprage` a few minutes after a standard dose of gadobutrol
    (``gd_dose`` 1 = 0.1 mmol/kg). Enhancing tumour, vessels and the choroid plexus brighten; tissue behind an
    intact blood-brain barrier barely changes."""

    name: ClassVar[str] = "t1ce"
    gd_dose: float = 1.0


@dataclass(frozen=True)
class _ChemicalShiftGRE(ImagingSequence):
    """Shared two-compartment (water + fat) spoiled-GRE model of VIBE and Dixon."""

    modality: ClassVar[str] = "mr"

    def _compartments(self, props: Mapping[str, np.ndarray], te: float) -> np.ndarray:
        """Complex signal: water ``(1−ff)·PD`` + fat ``ff·PD`` (fat-group T1/T2*) · exp(i·2π·Δf·TE)."""
        pd, ff = _prop(props, "pd", self.name), _prop(props, "ff", self.name)
        tr, flip = self.tr, self.flip  # type: ignore[attr-defined]
        water = spoiled_gre((1.0 - ff) * pd, _prop(props, "t1", self.name), _prop(props, "t2s", self.name), tr, te, flip)
        fat = spoiled_gre(ff * pd, _prop(props, "fat_t1", self.name), _prop(props, "fat_t2s", self.name), tr, te, flip)
        phase = 2.0 * math.pi * fat_frequency_hz(self.field) * te / 1000.0  # type: ignore[attr-defined]
        return water + fat * np.exp(1j * phase)


@dataclass(frozen=True)
class VibeIn(_ChemicalShiftGRE):
    """3-D spoiled GRE (VIBE) at the in-phase echo: ``|W + F·exp(i·2π·Δf·TE)|``.

    Defaults (seg2med paper: VIBE at 1.5 T): TR 6.5 ms, flip 10°, TE = 1/|Δf| when not
    given (4.61 ms at 1.5 T, 2.30 ms at 3 T).
    """

    name: ClassVar[str] = "vibe-in"
    _optional: ClassVar[tuple[str, ...]] = ("te",)
    field: float = 1.5
    tr: float = 6.5
    te: float | None = None
    flip: float = 10.0

    @property
    def effective_te(self) -> float:
        return in_phase_te(self.field) if self.te is None else self.te

    def signal(self, props: Mapping[str, np.ndarray]) -> np.ndarray:
        return np.abs(self._compartments(props, self.effective_te))


@dataclass(frozen=True)
class VibeOpp(VibeIn):
    """VIBE at the opposed-phase echo; TE = 1/(2|Δf|) when not given (2.30 ms at 1.5 T, 1.15 ms at 3 T)."""

    name: ClassVar[str] = "vibe-opp"

    @property
    def effective_te(self) -> float:
        return opposed_phase_te(self.field) if self.te is None else self.te


@dataclass(frozen=True)
class DixonWater(_ChemicalShiftGRE):
    """Two-point Dixon water image ``|(S_ip + S_op)/2|`` from the complex in/opposed-phase VIBE signals.

    Defaults: 1.5 T, TR 6.5 ms, flip 10°, echo times of :class:`VibeIn` / :class:`VibeOpp`.
    """

    name: ClassVar[str] = "dixon-water"
    _optional: ClassVar[tuple[str, ...]] = ("te_in", "te_opp")
    field: float = 1.5
    tr: float = 6.5
    te_in: float | None = None
    te_opp: float | None = None
    flip: float = 10.0

    @property
    def effective_te_in(self) -> float:
        return in_phase_te(self.field) if self.te_in is None else self.te_in

    @property
    def effective_te_opp(self) -> float:
        return opposed_phase_te(self.field) if self.te_opp is None else self.te_opp

    def _pair(self, props: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        return self._compartments(props, self.effective_te_in), self._compartments(props, self.effective_te_opp)

    def signal(self, props: Mapping[str, np.ndarray]) -> np.ndarray:
        s_ip, s_op = self._pair(props)
        return np.abs((s_ip + s_op) / 2.0)


@dataclass(frozen=True)
class DixonFat(DixonWater):
    """Two-point Dixon fat image ``|(S_ip − S_op)/2|`` (same parameters as :class:`DixonWater`)."""

    name: ClassVar[str] = "dixon-fat"

    def signal(self, props: Mapping[str, np.ndarray]) -> np.ndarray:
        s_ip, s_op = self._pair(props)
        return np.abs((s_ip - s_op) / 2.0)


@dataclass(frozen=True)
class Space(ImagingSequence):
    """T2-weighted turbo spin echo (SPACE): ``S = PD·(1−exp(−TR/T1))·exp(−TE/T2)``.

    Defaults: 1.5 T, TR 3000 ms, effective TE 100 ms.
    """

    name: ClassVar[str] = "space"
    modality: ClassVar[str] = "mr"
    field: float = 1.5
    tr: float = 3000.0
    te: float = 100.0

    def signal(self, props: Mapping[str, np.ndarray]) -> np.ndarray:
        pd, t1, t2 = (_prop(props, k, self.name) for k in ("pd", "t1", "t2"))
        return pd * (1.0 - np.exp(-self.tr / t1)) * np.exp(-self.te / t2)


@dataclass(frozen=True)
class Flair(ImagingSequence):
    """Fluid-attenuated inversion recovery: ``S = PD·|1 − 2·exp(−TI/T1) + exp(−TR/T1)|·exp(−TE/T2)``.

    Defaults: 1.5 T, TR 9000 ms, TE 100 ms; TI, when not given, nulls the tissue table's
    fluid group: ``TI = T1f·ln(2/(1 + exp(−TR/T1f)))`` (≈ 2.37 s at 1.5 T, 2.45 s at 3 T).
    """

    name: ClassVar[str] = "flair"
    modality: ClassVar[str] = "mr"
    _optional: ClassVar[tuple[str, ...]] = ("ti",)
    field: float = 1.5
    tr: float = 9000.0
    te: float = 100.0
    ti: float | None = None

    def inversion_time(self, fluid_t1: float) -> float:
        """``ti`` if given, else the TI that nulls a tissue of T1 ``fluid_t1`` at this TR."""
        if self.ti is not None:
            return self.ti
        return float(fluid_t1 * math.log(2.0 / (1.0 + math.exp(-self.tr / fluid_t1))))

    def signal(self, props: Mapping[str, np.ndarray]) -> np.ndarray:
        pd, t1, t2 = (_prop(props, k, self.name) for k in ("pd", "t1", "t2"))
        ti = self.ti if self.ti is not None else self.inversion_time(float(_prop(props, "fluid_t1", self.name)))
        return pd * np.abs(1.0 - 2.0 * np.exp(-ti / t1) + np.exp(-self.tr / t1)) * np.exp(-self.te / t2)


_SEQUENCES: dict[str, type[ImagingSequence]] = {
    cls.name: cls for cls in (CT, GRE, VibeIn, VibeOpp, DixonWater, DixonFat, Space, Flair, Mprage, T1ce)
}


def list_sequences() -> tuple[str, ...]:
    """Names of the known sequences."""
    return tuple(_SEQUENCES)


def sequence_class(name: str) -> type[ImagingSequence]:
    """The class of a sequence name (:class:`ConfigError` listing the known ones)."""
    try:
        return _SEQUENCES[name]
    except KeyError:
        raise ConfigError(f"unknown sequence {name!r} (known: {', '.join(_SEQUENCES)})") from None


def get_sequence(name: str, **overrides: Any) -> ImagingSequence:
    """A sequence with its defaults, any parameter overridden (unknown ones raise ConfigError)."""
    return sequence_class(name).from_config(overrides)


def sequence_from_config(config: Mapping[str, Any]) -> ImagingSequence:
    """Rebuild a sequence from :meth:`ImagingSequence.to_config` output."""
    if not isinstance(config, Mapping) or "name" not in config:
        raise ConfigError("a sequence config needs a 'name'")
    return sequence_class(str(config["name"])).from_config(config)
