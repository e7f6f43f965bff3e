"""Hostile pickles through the one safe reader (``spiritlens.checkpoints.pickle_safe.load_checkpoint``).

Each pickle is written opcode by opcode (``pickle.dumps`` recurses, and would refuse most of these)
into torch.save's zip layout, and read in a child process (conftest.py): nested 100,000 deep, a
list that contains itself, a zip bomb, and opcodes or operands torch's restricted unpickler refuses.
Each must end in one line naming the file and the reason (torch's own multi-line "Weights only load
failed…" text reduced to its reason), under 1 GB within 10 s; what is allowed loads.
"""

from __future__ import annotations

import pytest

from hostile_inputs import deep_list_fragment, dict_pickle, self_containing_fragment, torch_file, zip_bomb

PICKLE_CASES = {
    # name: (data.pkl bytes or an edit, expected regex after "<file>: ", or None: loads)
    "deep_100000": (dict_pickle({"cfg": deep_list_fragment(100_000)}),
                    r"pickled data nested deeper than 100 levels \(refused\)$"),
    "deep_99": (dict_pickle({"cfg": deep_list_fragment(98)}), None),
    "self_containing": (dict_pickle({"cfg": self_containing_fragment()}), None),
    "zip_bomb": (zip_bomb("c.pt"), r"cannot read test checkpoint \(its pickle archive/data\.pkl declares 209715200 bytes, "
                                   r"more than the 64 MiB limit"),
    "text_int_opcode": (b"I1\n.", r"cannot read test checkpoint \(Unsupported operand 73\)$"),
    "protocol_5_bytearray": (b"\x80\x05\x96\x03\x00\x00\x00\x00\x00\x00\x00abc.", r"cannot read test checkpoint \(Unsupported operand 150\)$"),
    "persistent_id_string": (b"\x80\x02X\x01\x00\x00\x00aQ.", r"cannot read test checkpoint \(persistent_load id must be tuple or int, but got"),
    "build_on_int": (b"\x80\x02K\x01}b.", r"cannot read test checkpoint \(Can only build Tensor, Parameter, OrderedDict or types allowlisted"),
    "setitems_on_list": (b"\x80\x02](K\x01K\x02u.", r"cannot read test checkpoint \(Can only SETITEMS for dict, collections\.OrderedDict"),
    "long4_beyond_the_file": (b"\x80\x02\x8b\xff\xff\xff\x7f.", r"cannot read test checkpoint \(not enough data in stream to read long4\)$"),
    "unhashable_key": (b"\x80\x02}]K\x01s.", r"cannot read test checkpoint \(unhashable type: 'list'\)$"),
    "os_system": (b"\x80\x02cposix\nsystem\nX\x04\x00\x00\x00trueq\x00\x85R.",
                  r"refusing to unpickle global 'posix\.system': not on the allow-list"),
}


@pytest.mark.parametrize("case", list(PICKLE_CASES))
def test_pickles(hostile, tmp_path, case):
    data, expected = PICKLE_CASES[case]
    path = tmp_path / "c.pt"
    if callable(data):
        data(tmp_path)
    else:
        torch_file(path, data)
    outcome = hostile.call("spiritlens.checkpoints.pickle_safe:load_checkpoint", path, "test")
    if expected is None:
        outcome.bounded()
        assert outcome.kind == "returned", outcome.describe()
        return
    line = outcome.refused(rf"^{path}: " + expected)
    assert "Weights only load failed" not in line


def test_a_config_that_contains_itself_is_refused_as_plain_values():
    from spiritlens.checkpoints.pickle_safe import to_plain

    loop: list = []
    loop.append(loop)
    with pytest.raises(ValueError, match=r"^c\.pt: a pickled config value contains itself \(refused\)$"):
        to_plain({"model": {"layers": loop}}, source="c.pt")
    shared = [1, 2]
    assert to_plain({"a": shared, "b": shared}, source="c.pt") == {"a": [1, 2], "b": [1, 2]}  # shared is not a loop
