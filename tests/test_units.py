"""How metric values are shown."""


def test_shares_print_in_percent_and_losses_in_four_decimals():
    from trainlab.units import format_metric, is_fraction

    assert [is_fraction(m) for m in ["val.accuracy", "test.macro_f1", "val.balanced_accuracy",
                                     "top5_accuracy", "val.loss"]] == [True] * 4 + [False]  # fmt: skip
    assert format_metric(0.971234, "val.accuracy") == "97.12%"
    assert format_metric(0.0912345, "val.loss") == "0.0912"
