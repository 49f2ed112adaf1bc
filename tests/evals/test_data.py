"""Eval data sets: the hash that says two reports scored the same questions."""

from __future__ import annotations


def test_the_same_data_hashes_the_same_through_any_path(tmp_path, monkeypatch):
    from assistant.toyworld import make_dataset
    from evals.data import load_qa

    data = make_dataset(tmp_path / "d", task="instruct", n=2, seed=0, eval_split=True)
    (tmp_path / "link").symlink_to(data)
    monkeypatch.chdir(tmp_path)
    hashes = {load_qa(p).hash() for p in (data, tmp_path / "link", type(data)("d"), type(data)("link"))}
    assert len(hashes) == 1
