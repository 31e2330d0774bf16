"""Config presets, overrides and validation: every bad value is caught before work starts, by name."""
import pytest
from hypothesis import example, given, settings, strategies as st

from ddpm_lite.config import PRESETS, Config, get_config, parse_overrides
from ddpm_lite.errors import ConfigError


def test_paper_preset_matches_the_paper():
    c = get_config("paper")
    assert (c.model, c.schedule, c.T, c.loss, c.batch_size, c.iterations, c.w) == \
        ("paper", "linear", 1000, "l1", 32, 100_000, 0.2)
    assert c.channels == (64, 128, 256) and c.sampler == "ancestral"


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_is_valid_and_round_trips(name):
    c = get_config(name)
    assert get_config(c) == c
    assert get_config("quick", **c.to_dict()) == c


def test_overrides_from_strings_are_coerced():
    c = get_config("quick", **parse_overrides(["iterations=500", "lr=1e-3", "attention=false",
                                               "channels=8,16,32", "w=0", "T=1e3"]))
    assert (c.iterations, c.lr, c.attention, c.channels, c.w, c.T) == (500, 1e-3, False, (8, 16, 32), 0.0, 1000)


@pytest.mark.parametrize("overrides, field", [
    (dict(T=0), "T"), (dict(p_uncond=1.5), "p_uncond"), (dict(p_uncond=-0.1), "p_uncond"),
    (dict(batch_size=0), "batch_size"), (dict(w=-1), "w"), (dict(lr=0), "lr"),
    (dict(ema_decay=1.0), "ema_decay"), (dict(schedule="sigmoid"), "schedule"), (dict(loss="huber"), "loss"),
    (dict(model="vit"), "model"), (dict(sample_steps=2000), "sample_steps"), (dict(T=10), "sample_steps"),
    (dict(channels="8,16"), "channels"), (dict(channels="12,24,48"), "channels"), (dict(iterations="lots"), "iterations"),
    (dict(attention="maybe"), "attention"), (dict(lr="nan"), "lr"), (dict(w="inf"), "w"), (dict(seed=-1), "seed"),
    (dict(model="paper", attention=True), "attention"), (dict(time_dim=7), "time_dim"), (dict(T=2.5), "T"),
])
def test_bad_values_name_the_field(overrides, field):
    with pytest.raises(ConfigError, match=f"'{field}'"):
        get_config("quick", **overrides)


def test_unknown_key_suggests_the_near_one():
    with pytest.raises(ConfigError, match="unknown config field 'learning_rate'"):
        get_config("quick", learning_rate=1)
    with pytest.raises(ConfigError, match="Did you mean 'batch_size'"):
        get_config("quick", batchsize=1)


def test_unknown_preset_and_malformed_override():
    with pytest.raises(ConfigError, match="unknown preset 'fast'"):
        get_config("fast")
    with pytest.raises(ConfigError, match="field=value"):
        parse_overrides(["iterations"])


def test_config_is_immutable_and_validated_directly():
    c = get_config("quick")
    with pytest.raises(Exception):
        c.T = 5
    with pytest.raises(ConfigError):
        Config(T=-1)


@settings(max_examples=200, deadline=None)
@given(field=st.sampled_from(["T", "batch_size", "iterations", "p_uncond", "w", "lr", "ema_decay", "sample_steps",
                              "seed", "grad_clip", "time_dim", "checkpoint_every"]),
       value=st.one_of(st.integers(-10**6, 10**6), st.floats(allow_nan=True, allow_infinity=True),
                       st.text(max_size=8), st.booleans()))
@example(field="T", value="INF")                 # once raised OverflowError from int(float("inf"))
@example(field="lr", value="nan")
@example(field="batch_size", value=float("inf"))
def test_any_value_is_accepted_or_rejected_with_a_config_error(field, value):
    """Property: no input makes get_config fail with anything but a ConfigError naming the field."""
    try:
        c = get_config("quick", **{field: value})
    except ConfigError as e:
        assert f"'{field}'" in str(e) or "sample_steps" in str(e)
    else:
        assert isinstance(getattr(c, field), (int, float))
