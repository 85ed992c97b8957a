"""The main job runs end to end and accounts for every reading."""

from __future__ import annotations

from rich.console import Console

from fieldtrust.demo import run_demo


def test_demo_stores_every_reading_once(shared_broker):
    console = Console(record=True, width=120)
    result = run_demo(seconds=5, console=console)
    assert result.produced_gateway > 0 and result.produced_nodes > 0
    assert result.stored_gateway == result.produced_gateway
    assert result.stored_nodes == result.produced_nodes
    assert result.conflicts == 0
    assert "nothing lost" in console.export_text()
