"""Generative models through fit: the GAN's two losses both move and stay finite, its samples
come out of `netc predict`; the VAE's reconstruction improves."""

import numpy as np
from practice_helpers import example, run_netc

import netc
from netc.data import load_arrays


def test_gan_losses_both_move_and_stay_finite():
    m = netc.compile(example("gan.net"), hidden=16)
    h = m.fit(epochs=3)
    for k in ("d_loss", "g_loss"):
        assert len(h[k]) == 3 and all(np.isfinite(h[k]))
        assert h[k][-1] != h[k][0]
    np.testing.assert_allclose(h["loss"], np.add(h["d_loss"], h["g_loss"]), rtol=1e-6)


def test_gan_samples_through_netc_predict(tmp_path):
    points = tmp_path / "points.npz"  # any rows of x will do: samples depend on noise only
    np.savez(points, x=load_arrays("mixture")[0]["x"][:256])
    res = run_netc("train", example("gan.net"), "--data", points, "--epochs", "1", "-q",
                   "--set", "hidden=16", "--run-dir", tmp_path / "run", "-o", tmp_path / "g.npz")
    assert res.returncode == 0, res.stderr
    res = run_netc("predict", tmp_path / "g.npz", "--data", points, "-o", tmp_path / "s.npz")
    assert res.returncode == 0, res.stderr
    samples = np.load(tmp_path / "s.npz")["samples"]
    assert samples.shape == (256, 2) and np.all(np.isfinite(samples))
    assert samples.std(axis=0).min() > 0  # distinct draws, not one point repeated


def _reconstruction_error(m, x):
    recon = np.concatenate([m.predict(x=x[i:i + 64])["recon"] for i in range(0, len(x), 64)])
    return float(np.mean((recon - x) ** 2))


def test_vae_reconstruction_improves(digits):
    x = digits[0][:512]
    m = netc.compile(example("vae.net"))
    before = _reconstruction_error(m, x)
    h = m.fit(x=x, epochs=3)
    after = _reconstruction_error(m, x)
    assert h["loss"][-1] < h["loss"][0]
    assert after < 0.8 * before
