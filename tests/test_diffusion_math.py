"""zoo.runtime.diffusion: schedules and samplers, checked against denoisers known in closed form."""

import numpy as np
import pytest

from zoo.runtime.diffusion import Schedule, ddim_sample, ddim_timesteps, ddpm_sample


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_schedules(kind):
    s = Schedule(kind, 1000)
    assert s.betas.dtype == np.float64 and (np.diff(s.alpha_bar) < 0).all()
    assert 0.99 < s.alpha_bar[0] < 1 and s.alpha_bar[-1] < 1e-3
    x0, noise = np.ones((2, 3)), np.zeros((2, 3))
    np.testing.assert_allclose(s.add_noise(x0, noise, np.array([0, 999])),
                               np.sqrt(s.alpha_bar[[0, 999]])[:, None] * x0)
    with pytest.raises(ValueError, match="schedule must be one of"):
        Schedule("quadratic")


def gaussian_oracle(schedule, std):
    """The exact epsilon-prediction for data ~ N(0, std^2): E[eps | x_t]."""
    def denoise(x, t, labels):
        a = schedule.alpha_bar[t].reshape(-1, 1)
        return x * np.sqrt(1 - a) / (a * std**2 + 1 - a)
    return denoise


def test_ddpm_samples_the_data_distribution():
    s = Schedule("linear", 1000)
    x = ddpm_sample(gaussian_oracle(s, 0.5), s, (20000, 1), seed=1)
    assert x.std() == pytest.approx(0.5, rel=0.03) and abs(x.mean()) < 0.02


def test_ddim_with_eta_0_is_deterministic_and_converges_with_steps():
    s = Schedule("cosine", 1000)
    oracle = gaussian_oracle(s, 0.5)
    stds = [ddim_sample(oracle, s, (20000, 1), steps=n, seed=2).std() for n in (10, 50, 1000)]
    assert stds[2] == pytest.approx(0.5, rel=0.02)  # the probability-flow ODE, finely stepped
    assert stds[0] < stds[1] < stds[2]  # coarse steps shrink the samples (measured: 0.42, 0.48, 0.50)
    x = ddim_sample(oracle, s, (5, 1), steps=10, seed=2)
    np.testing.assert_array_equal(x, ddim_sample(oracle, s, (5, 1), steps=10, seed=2))


def test_guidance_mixes_conditional_and_unconditional():
    s = Schedule("cosine", 100)
    seen = []

    def denoise(x, t, labels):  # conditional eps = 1, unconditional (label 10) eps = 0
        seen.append(labels.copy())
        return (labels != 10).astype(np.float32)[:, None] * np.ones_like(x)

    from zoo.runtime.diffusion import guided

    eps = guided(denoise, np.zeros((3, 1)), 5, np.array([1, 2, 3], np.int32), guidance=3.0, null_label=10)
    np.testing.assert_allclose(eps, 3.0)
    assert seen[-1].tolist() == [1, 2, 3, 10, 10, 10]  # one batch: conditional then unconditional


def test_ddim_timesteps():
    assert ddim_timesteps(1000, 1000).tolist() == list(range(999, -1, -1))
    t = ddim_timesteps(1000, 10)
    assert len(t) == 10 and t[0] == 999 and t[-1] == 0
    with pytest.raises(ValueError, match="steps must be in 1..1000"):
        ddim_timesteps(1000, 0)
