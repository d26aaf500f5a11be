"""Options defined once: the scripts' parsers are generated from their options dataclasses (``l2e.core.cli``)."""
from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from typing import Optional

import pytest

import evaluate_mteb
import mine
import tokenize_data
from l2e.core.cli import option, options_parser, parse_weights
from l2e.data.prepare import TokenizeOptions
from l2e.model.heads import HEADS
from l2e.retrieval.mine import MineOptions

NAMES = ["a"]


@dataclass
class Toy:
    path: str = option(help="required: no default", group="files")
    count: int = option(3, "an int with a default", group="numbers")
    ratio: Optional[float] = option(None, "an optional float")
    fast: bool = option(False, "a switch")
    name: str = option("a", "choices read when the parser is built", choices=lambda: tuple(NAMES))
    weights: Optional[dict] = option(None, "a custom type", type=parse_weights)


def test_parser_follows_the_fields():
    NAMES.append("late")  # registered after the dataclass was defined, before the parser is built
    try:
        parser = options_parser(Toy)
    finally:
        NAMES.remove("late")
    args = parser.parse_args(["--path", "p", "--ratio", "0.5", "--fast", "--name", "late", "--weights", "x=1,y=0.5"])
    assert Toy(**vars(args)) == Toy(path="p", ratio=0.5, fast=True, name="late", weights={"x": 1.0, "y": 0.5})
    assert Toy(**vars(parser.parse_args(["--path", "p"]))) == Toy(path="p")
    assert type(parser.parse_args(["--path", "p", "--count", "7"]).count) is int
    titles = [g.title for g in parser._action_groups]
    assert "files" in titles and "numbers" in titles
    help_text = parser.format_help()
    assert "(default: 3)" in help_text and "(default: None)" not in help_text


@pytest.mark.parametrize("argv, message", [
    ([], "the following arguments are required: --path"),
    (["--path", "p", "--count", "x"], "invalid int value: 'x'"),
    (["--path", "p", "--name", "zzz"], "invalid choice: 'zzz'"),
    (["--path", "p", "--weights", "x:1"], "expected name=weight"),
])
def test_bad_command_lines_are_usage_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        options_parser(Toy).parse_args(argv)
    assert e.value.code == 2
    assert message in capsys.readouterr().err


def test_a_field_without_option_is_refused():
    @dataclass
    class Plain:
        x: int = 1

    with pytest.raises(TypeError, match="Plain.x is not declared with l2e.core.cli.option"):
        options_parser(Plain)

    @dataclass
    class OnByDefault:
        x: bool = option(True, "a switch that cannot be switched off")

    with pytest.raises(TypeError, match="must default to False"):
        options_parser(OnByDefault)


@pytest.mark.parametrize("script, cls, required", [
    (tokenize_data, TokenizeOptions, ["--input_dir", "i", "--output_dir", "o"]),
    (mine, MineOptions, ["--input", "i", "--output", "o"]),
])
def test_scripts_take_exactly_their_options_fields(script, cls, required):
    """Every field is an option and every option a field, with the dataclass's defaults."""
    parser = script.build_parser()
    dests = {a.dest for a in parser._actions if a.dest != "help"}
    assert dests == {f.name for f in dataclasses.fields(cls)}
    parsed = cls(**vars(parser.parse_args(required)))
    kwargs = dict(zip(required[::2], required[1::2]))
    assert parsed == cls(**{k.lstrip("-"): v for k, v in kwargs.items()})


def test_scorer_choices_include_a_head_registered_after_import(monkeypatch):
    monkeypatch.setitem(HEADS, "toyhead", object())
    args = mine.build_parser().parse_args(["--input", "i", "--output", "o", "--scorer", "toyhead"])
    assert args.scorer == "toyhead"


def test_one_parse_weights():
    assert mine.MineOptions.__dataclass_fields__["hybrid_weights"].metadata["cli"]["type"] is parse_weights
    assert evaluate_mteb.parse_weights is parse_weights
    assert parse_weights("dense=1, sparse=0.3,") == {"dense": 1.0, "sparse": 0.3}
    with pytest.raises(argparse.ArgumentTypeError):
        parse_weights("dense")


def test_inference_overrides_travel_one_way():
    """An Embedder's instruction and token caps are set by its constructors only: no code assigns them afterwards
    and no consumer (MTEB's encoder, Reps, the miner) takes its own copy as a parameter."""
    import ast
    import inspect
    from pathlib import Path

    from l2e.retrieval.mteb_wrapper import EmbedderEncoder, evaluate_retrieval
    from l2e.retrieval.search import Reps

    root = Path(__file__).resolve().parents[1]
    fields = {"query_instruction", "max_length", "query_max_length"}
    offenders = []
    for path in [*root.glob("*.py"), *(root / "l2e").rglob("*.py"), *(root / "benchmarks").glob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(
                node, (ast.AugAssign, ast.AnnAssign)) else []
            for t in targets:
                for sub in ast.walk(t):
                    if (isinstance(sub, ast.Attribute) and sub.attr in fields
                            and not (isinstance(sub.value, ast.Name) and sub.value.id in ("self", "args", "o"))):
                        offenders.append(f"{path.relative_to(root)}:{node.lineno}")
    assert offenders == []
    for consumer in (EmbedderEncoder.__init__, Reps.__init__, evaluate_retrieval):
        assert not fields & set(inspect.signature(consumer).parameters), consumer
