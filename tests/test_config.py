import json

import pytest

from harness.compare.cli import parser
from harness.spec.config import Config, config_from_arguments
from harness.errors import InputError


def test_defaults_match_the_spec():
    c = Config()
    assert (c.hidden, c.activation, c.loss, c.optimizer, c.lr, c.batch_size, c.dtype, c.seed) == \
        (128, "relu", "cross_entropy", "sgd", 0.1, 64, "float32", 0)
    assert c.output == "softmax" and Config(loss="mse").output == "sigmoid"


def test_json_file_then_command_line_on_top(tmp_path):
    f = tmp_path / "c.json"
    f.write_text(json.dumps({"hidden": 32, "activation": "tanh", "lr": 0.05}))
    args = parser().parse_args(["a", "b", "--config", str(f), "--lr", "0.2", "--dtype", "float64"])
    c = config_from_arguments(args)
    assert (c.hidden, c.activation, c.lr, c.dtype, c.steps) == (32, "tanh", 0.2, "float64", Config().steps)


@pytest.mark.parametrize("data, words", [
    ({"activation": "gelu"}, ["'activation'", "relu, sigmoid, tanh", "'gelu'"]),
    ({"hidden": 0}, ["'hidden'", "positive integer"]),
    ({"batch_size": 2.5}, ["'batch_size'"]),
    ({"lr": -1}, ["'lr'", "non-negative"]),
    ({"hiden": 3}, ["unknown config field", "hiden"]),
    ({"hidden": 32, "layers": [16, 8]}, ["'hidden' (32)", "'layers' ([16, 8]) disagree"]),
    ({"hidden": 32, "layers": [16]}, ["'hidden' (32)", "'layers' ([16]) disagree"]),
])
def test_bad_config_names_the_field(tmp_path, data, words):
    f = tmp_path / "bad.json"
    f.write_text(json.dumps(data))
    with pytest.raises(InputError) as e:
        Config.from_file(f)
    assert str(f) in str(e.value)
    for w in words:
        assert w in str(e.value)


def test_config_file_that_is_not_json(tmp_path):
    f = tmp_path / "c.json"
    f.write_text("{hidden: 3")
    with pytest.raises(InputError, match="not valid JSON"):
        Config.from_file(f)


def test_hidden_and_layers_together_name_one_first_width(tmp_path):
    """Given together they must agree, in a file or on the command line; `hidden` alone over a deeper
    network sets its first width, `layers` alone replaces the widths."""
    f = tmp_path / "deep.json"
    f.write_text(json.dumps({"hidden": 16, "layers": [16, 8]}))
    assert Config.from_file(f).widths == (16, 8)
    for extra, widths in ((["--hidden", "24"], (24, 8)), (["--layers", "24,12"], (24, 12)),
                          (["--hidden", "24", "--layers", "24,12"], (24, 12))):
        assert config_from_arguments(parser().parse_args(["a", "b", "--config", str(f), *extra])).widths == widths
    with pytest.raises(InputError, match=r"command line: config fields 'hidden' \(32\) and 'layers' \(\[24, 12\]\)"):
        config_from_arguments(parser().parse_args(["a", "b", "--hidden", "32", "--layers", "24,12"]))
