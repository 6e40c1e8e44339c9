"""Shared fixtures.

Real-data tests read the shared example data from ``$SEG2MED_EXAMPLES``
(default ``../shared/data`` relative to the repository root). When
``SEG2MED_REQUIRE_DATA=1`` (set by ``.ci/run``) a missing data folder is an
error, not a skip.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _examples_dir() -> Path:
    return Path(os.environ.get("SEG2MED_EXAMPLES", str(REPO.parent / "shared" / "data"))).resolve()


@pytest.fixture(scope="session")
def data_dir() -> Path:
    d = _examples_dir()
    if not (d / "totalsegmentator" / "example_ct.nii.gz").is_file():
        msg = f"shared example data not found at {d} (set SEG2MED_EXAMPLES)"
        if os.environ.get("SEG2MED_REQUIRE_DATA") == "1":
            pytest.fail(msg)
        pytest.skip(msg)
    return d


@pytest.fixture(scope="session")
def ts_dir(data_dir: Path) -> Path:
    """``totalsegmentator/`` folder: subject A (CT) and subject C (MR)."""
    return data_dir / "totalsegmentator"


@pytest.fixture(scope="session")
def tcga7294(data_dir: Path) -> dict:
    """TCGA-DU-7294 (BraTS-Toolkit, skull-stripped, 1 mm): its four real contrasts (``raw``: t1, t1ce, t2, flair), its
    majority-vote tumour fusion (``tumour``, BraTS 2021 ids) and that fusion over the brain of the images
    (``labels``, ``brats_medddpm``)."""
    from seg2med.anatomy.brain import brain_label_map, brain_mask_from_images
    from seg2med.io import load_volume

    tc = data_dir / "brainlesion-tutorials" / "TCGA-DU-7294"
    files = {"t1": "t1", "t1ce": "t1c", "t2": "t2", "flair": "fla"}
    raw = {n: load_volume(tc / "raw_bet" / f"TCGA-DU-7294_{f}_bet.nii.gz") for n, f in files.items()}
    tumour = load_volume(tc / "fusion" / "mav.nii.gz", kind="labels")
    return {"raw": raw, "tumour": tumour,
            "labels": brain_label_map(tumour, "brats2021", brain_mask_from_images(list(raw.values())))}


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread: tiny models gain nothing from more, and a busy machine loses a lot (oversubscription)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def random_inception_weights(tmp_path_factory):
    """torch-fidelity's Inception-v3 built without loading anything, randomly initialised, saved as a weights file.

    The extractor's own initialisation shrinks activations to ~1e-8 through its
    ~90 conv/BN layers; convolutions are re-drawn with He-normal init so the
    2048-d features are O(1).
    """
    import torch

    from seg2med.metrics._thirdparty import import_bare

    mod = import_bare("torch_fidelity", "feature_extractor_inceptionv3")
    cls = mod.FeatureExtractorInceptionV3
    mp = pytest.MonkeyPatch()
    mp.setattr(mod, "load_state_dict_from_url", lambda *a, **k: {})  # no download, empty state ...
    mp.setattr(cls, "load_state_dict", lambda self, *a, **k: None)  # ... not applied
    try:
        torch.manual_seed(0)
        net = cls("inception-v3-compat", ["2048"])
    finally:
        mp.undo()
    for m in net.modules():
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    path = tmp_path_factory.mktemp("fid") / "random-inception.pth"
    torch.save(net.state_dict(), path)
    return path
