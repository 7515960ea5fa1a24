"""The real focal stacks of ../shared/data/focal_stacks (skipped where absent): hand-annotated ordinal relations
("the jar is nearer than the door"), alignment on hand-held phone stacks, and the inverted near/far pair.

Regions are boxes in fractions of the output image (x0, y0, x1, y1), annotated by looking at the stacks; a relation
holds when the median depth of one region is below the other's. The full-size runs take a minute or two each and
are marked slow (``pytest -m slow``).
"""

from __future__ import annotations

import pytest
import torch

from defocus.cli import main

PIXEL = "focal_stacks/hybriddepth_pixel6pro"

# (stack folder, focus distances from the file names, camera flags, nearer-than relations between regions)
ORDINAL_CASES = [
    (
        f"{PIXEL}/imgs_old", [0.24, 0.36, 0.6, 1.5, 2.5],
        # 1280 px wide downscale of the 4080 px sensor output: pitch 2.4 µm × 4080 / 1280.
        ["--focal-length-mm", "6.81", "--f-number", "1.85", "--pixel-size-um", "7.65"],
        {"desk front": (0.05, 0.88, 0.3, 0.97), "jar": (0.36, 0.68, 0.46, 0.82), "door": (0.42, 0.15, 0.6, 0.45),
         "window": (0.76, 0.15, 0.9, 0.45)},
        [("desk front", "door"), ("jar", "door"), ("jar", "window"), ("desk front", "window")],
    ),
    (
        f"{PIXEL}/images", [0.35, 0.50, 0.90, 1.33, 2.21], [],  # camera from EXIF + the sensor table
        {"floor near": (0.3, 0.85, 0.7, 0.95), "box": (0.54, 0.34, 0.64, 0.48), "wall": (0.38, 0.12, 0.5, 0.3)},
        [("floor near", "box"), ("floor near", "wall"), ("box", "wall")],
    ),
]


def _median(depth: torch.Tensor, box) -> float:
    h, w = depth.shape
    x0, y0, x1, y1 = box
    region = depth[int(y0 * h) : int(y1 * h), int(x0 * w) : int(x1 * w)]
    return float(region[region > 0].median())


@pytest.mark.slow
@pytest.mark.parametrize("case", ORDINAL_CASES, ids=lambda c: c[0].split("/")[-1])
def test_ordinal_relations_hold_on_phone_stacks(shared_data, tmp_path, case):
    import tifffile

    folder, focus, flags, regions, relations = case
    out = tmp_path / "out"
    rc = main(["predict", str(shared_data / folder), "-o", str(out), "--focus", ",".join(map(str, focus)), *flags])
    assert rc == 0
    (result,) = list(out.iterdir())
    depth = torch.from_numpy(tifffile.imread(result / "depth.tiff"))
    med = {name: _median(depth, box) for name, box in regions.items()}
    for near, far in relations:
        assert med[near] < med[far], f"{near} ({med[near]:.2f} m) should be nearer than {far} ({med[far]:.2f} m)"


def test_alignment_brings_the_residual_down_on_a_real_hand_held_stack(shared_data):
    from defocus.data.align import estimate_alignment
    from defocus.data.folders import read_stack

    st = read_stack(shared_data / PIXEL / "imgs_old", focus=[0.24, 0.36, 0.6, 1.5, 2.5],
                    camera_flags={"focal_length_mm": 6.81, "f_number": 1.85, "pixel_size_um": 7.65})
    al = estimate_alignment(st.images, st.focus_distances_m, st.camera.focal_length_m, max_size=256)
    moved = al.residual_before > 0
    assert (al.residual_after[moved] < 0.5 * al.residual_before[moved]).all()
    # Magnification grows as focus comes nearer (focus breathing), as the thin lens says: the scales found and the
    # focus distances are strongly anti-correlated in rank, and the focus-order check stays silent.
    from defocus.data.align import check_focus_order

    rank_s = torch.argsort(torch.argsort(al.scales)).double()
    rank_f = torch.argsort(torch.argsort(st.focus_distances_m)).double()
    assert float(torch.corrcoef(torch.stack([rank_s, rank_f]))[0, 1]) < -0.7
    assert check_focus_order(al, st.focus_distances_m) is None


def test_inverted_near_far_pair_gives_the_warning(shared_data, tmp_path, capsys):
    folder = shared_data / "focal_stacks/dfd_pair_breakfast_watanabe_nayar"
    # The user types NEAR,FAR (529 mm, 869 mm); in name order the far-named image comes first.
    rc = main(["predict", str(folder), "-o", str(tmp_path / "o"), "--focus", "0.529,0.869", "--focal-length-mm",
               "25", "--f-number", "8.3", "--pixel-size-um", "25", "--max-size", "160", "--no-align"])
    err = capsys.readouterr().err
    assert rc == 0
    assert "breakfast_far.png -> 0.529 m" in err and "opposite" in err
