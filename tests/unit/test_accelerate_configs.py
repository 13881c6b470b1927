"""The accelerate configs under recipes/accelerate load with accelerate's own loader and say how to run them."""

from pathlib import Path

import pytest

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "recipes" / "accelerate").glob("*.yaml"))


def test_there_is_a_config_for_each_documented_setup():
    assert {p.stem for p in CONFIGS} >= {"cpu", "cpu_2proc", "ddp", "fsdp", "zero2", "zero3"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_accelerate_config_loads_and_starts_with_its_command(path):
    from accelerate.commands.config.config_args import load_config_from_file

    cfg = load_config_from_file(str(path))
    assert cfg.num_processes >= 1 and cfg.distributed_type is not None
    assert path.read_text().startswith(f"# accelerate launch --config_file recipes/accelerate/{path.name} -m align ")
    if path.stem.startswith("zero"):
        assert cfg.deepspeed_config["zero_stage"] == int(path.stem[-1])
