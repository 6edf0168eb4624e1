"""The checkpoint reader's stand-ins (pretrained_ports/_stand_ins.py): made fresh for
each read and read-only, so no file can change how a later one is decoded."""

from __future__ import annotations

import pytest


def test_stand_ins_are_fresh_per_read_and_read_only() -> None:
    from pretrained_ports import _stand_ins as reader

    first, second = reader.stand_ins(), reader.stand_ins()
    assert first.keys() == second.keys()
    for key, stand_in in first.items():
        assert stand_in is not second[key], key
        assert not hasattr(stand_in, "__dict__"), key
        with pytest.raises(reader.Mutation):
            stand_in.code = "f8"  # type: ignore[attr-defined]
