"""One OCPP consumer per connected charger: what it holds is kept in slots, not in a dict.

An attribute assigned without its slot silently lands in the instance dict Channels' base
classes bring (~1.3 KB a charger for the ~20 the consumer keeps, tracemalloc), so the source
is checked: every attribute a method of the consumer sets must be a slot or a property.
"""

from __future__ import annotations

import ast
import inspect
import textwrap

from chargers import consumers, protocol
from chargers.consumers import OcppConsumer


def _attributes_set_on_self(cls: type) -> dict[str, int]:
    """Names assigned as `self.<name>` anywhere in `cls`'s body, with the line of the first."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    assigned: dict[str, int] = {}
    for node in ast.walk(tree):
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = list(node.targets)
        elif isinstance(node, (ast.AnnAssign, ast.AugAssign)):
            targets = [node.target]
        for target in targets:
            for element in ast.walk(target):
                if (isinstance(element, ast.Attribute) and isinstance(element.value, ast.Name)
                        and element.value.id == "self"):
                    assigned.setdefault(element.attr, element.lineno)
    return assigned


def _slots_and_properties(cls: type) -> set[str]:
    names: set[str] = set()
    for klass in cls.__mro__:
        names.update(klass.__dict__.get("__slots__", ()))
        names.update(name for name, value in vars(klass).items() if isinstance(value, property))
    return names


def test_every_attribute_the_consumer_sets_has_its_slot():
    assigned = _attributes_set_on_self(OcppConsumer)
    assert {"charge_point_id", "charger_pk", "cp", "_tasks", "_relays"} <= set(assigned)  # the walk sees them
    missing = {name: line for name, line in assigned.items() if name not in _slots_and_properties(OcppConsumer)}
    assert not missing, f"OcppConsumer sets attributes without a slot (name: line in the class): {missing}"


def test_a_new_consumer_keeps_only_channels_own_attributes_in_its_dict():
    consumer = OcppConsumer()
    assert set(vars(consumer)) <= {"groups"}
    assert consumer.charge_point_id == "" and consumer.charger_pk is None and consumer.cp is None
    # The containers most connections never use are made at their first use.
    assert consumer._tasks is None and consumer._relays is None and consumer.relayed_requests is None


def test_the_per_connection_helpers_have_no_dict():
    wire = consumers._Wire(OcppConsumer())
    log = protocol._LibraryLog("CP-1")
    for helper in (wire, log):
        assert not hasattr(helper, "__dict__"), type(helper).__name__
