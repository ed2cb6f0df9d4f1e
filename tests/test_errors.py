import pytest

from trainlab.config import ConfigError, load_config
from trainlab.errors import did_you_mean


def test_did_you_mean_names_the_nearest_choice_or_nothing():
    assert did_you_mean("cnnn", ["cnn", "mlp"]) == " (did you mean 'cnn'?)"
    assert did_you_mean("CNN2", ["cnn", "mlp"]) == " (did you mean 'cnn'?)"  # case aside
    assert did_you_mean("Widht", ["width", "widths", "depth"]) == " (did you mean 'width'?)"
    assert did_you_mean("transformer", ["cnn", "mlp"]) == ""
    assert did_you_mean("", ["cnn"]) == "" and did_you_mean(3, ["cnn"]) == ""


@pytest.mark.parametrize(
    ("override", "line"),
    [
        ("optim.lrr=0.1", "optim.lrr: unknown key (did you mean 'lr'?); valid: name, lr,"),
        ("data.augment.rotat=5", "data.augment.rotat: unknown key (did you mean 'rotate'?)"),
        ("epoch=3", "epoch: unknown key (did you mean 'epochs'?); valid: data, model,"),
        ("optim.zzz=1", "optim.zzz: unknown key; valid: name, lr, momentum"),
    ],
)
def test_an_unknown_config_key_names_its_sections_keys(override, line):
    with pytest.raises(ConfigError) as caught:
        load_config(overrides=[override])
    assert line in str(caught.value)
