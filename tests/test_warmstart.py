"""Warm start: `prune(track=True)` knows where each kept element came from, and `inherit` moves a tuned
model's weights into a differently pruned copy of the same base by those places. yolo11n.yaml (has BN)."""

import torch

from lipslib.pruning import engine
from lipslib.pruning.layers import default_targets
from lipslib.recovery.warmstart import inherit


def schedules(model):
    names = default_targets(model)
    return {n: 0.3 for n in names}, {n: (0.5 if i % 2 else 0.1) for i, n in enumerate(names)}


def test_origin_points_at_the_base_element_of_every_kept_element(yolo11n):
    res = engine.prune(yolo11n, schedules(yolo11n)[1], log=False, track=True)
    base = engine.tensors(yolo11n)
    pruned = engine.tensors(res.model)
    assert set(res.origin) == set(pruned) and any("running_var" in n for n in pruned)
    for name, t in pruned.items():
        assert torch.equal(base[name].flatten()[res.origin[name]], t), name


def test_inherit_takes_the_donor_where_both_kept_and_the_base_elsewhere(yolo11n):
    a, b = schedules(yolo11n)
    donor = engine.prune(yolo11n, a, log=False, track=True)
    with torch.no_grad():
        for t in engine.tensors(donor.model).values():
            t.add_(1000.0)  # "fine-tuned": every donor value is told apart from the base's
    new = engine.prune(yolo11n, b, log=False, track=True)
    untouched = {n: t.clone() for n, t in engine.tensors(new.model).items()}
    share = inherit(new.model, new.origin, donor.model, donor.origin)

    copied = total = 0
    theirs, base = engine.tensors(donor.model), engine.tensors(yolo11n)
    for name, t in engine.tensors(new.model).items():
        at_base = torch.full((base[name].numel(),), float("nan"))  # the donor's values scattered to base places
        at_base[donor.origin[name].flatten()] = theirs[name].flatten()
        want = at_base[new.origin[name]]
        hit = ~torch.isnan(want)
        assert torch.equal(t[hit], want[hit]) and torch.equal(t[~hit], untouched[name][~hit]), name
        copied, total = copied + int(hit.sum()), total + t.numel()
    assert 0.5 < share == copied / total < 1.0  # some channels return, most carry over


def test_inherit_with_the_same_schedule_copies_everything(yolo11n):
    a, _ = schedules(yolo11n)
    donor = engine.prune(yolo11n, a, log=False, track=True)
    with torch.no_grad():
        for t in engine.tensors(donor.model).values():
            t.mul_(2.0)
    new = engine.prune(yolo11n, a, log=False, track=True)
    assert inherit(new.model, new.origin, donor.model, donor.origin) == 1.0
    sd, ref = new.model.state_dict(), donor.model.state_dict()
    assert all(torch.equal(sd[k], ref[k]) for k in sd)
