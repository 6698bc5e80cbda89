"""Where a model's parts live on the platform (Glow's partitioner, for recommendation graphs): sharded
nodes (the embedding tables) spread over the cards, balanced by bytes (largest first onto the least-loaded
card); every other node (the dense part) replicated on every card."""
from __future__ import annotations

from dataclasses import dataclass, field

from vnpu.errors import InvalidArgument


@dataclass
class Placement:
    """Where each sharded node (table) lives (card index) and the bytes per card."""
    table_card: list
    card_bytes: list = field(default_factory=list)

    def tables_on(self, card):
        """The tables placed on `card`."""
        return [t for t, c in enumerate(self.table_card) if c == card]

    def on_cards(self, cards):
        """This placement over card slots 0..n-1 mapped onto the device indices `cards` (the cards alive)."""
        return Placement([cards[c] for c in self.table_card], list(self.card_bytes))


def partition(table_bytes, cards):
    """Shard tables across cards, balanced by bytes: largest table first onto the least-loaded card (LPT:
    within 4/3 of the best balance)."""
    if not isinstance(cards, int) or isinstance(cards, bool) or cards < 1:
        raise InvalidArgument(f"partition: cards must be a positive int, got {cards!r}")
    load = [0] * cards
    where = [0] * len(table_bytes)
    for t in sorted(range(len(table_bytes)), key=lambda t: -table_bytes[t]):
        c = min(range(cards), key=lambda c: (load[c], c))
        where[t] = c
        load[c] += table_bytes[t]
    return Placement(where, load)


def partition_graph(graph, cards):
    """Glow-style placement for recommendation graphs: sharded nodes balanced by weight bytes, the rest
    replicated on every card."""
    return partition([n.weight_bytes for n in graph.sharded()], cards)
