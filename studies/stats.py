"""Statistics over seeds, with numpy alone. Every claim in the README that one norm differs from
another comes from paired(): the runs of two variants share their seeds, so the per-seed
differences are compared with zero."""

import math

import numpy as np


def t_cdf(t, df):
    """Student's t distribution function, by Simpson integration of its density."""
    x = np.linspace(0.0, abs(t), 4001)
    log_c = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    density = np.exp(log_c - (df + 1) / 2 * np.log1p(x * x / df))
    h = x[1] - x[0]
    area = h / 3 * (density[0] + density[-1] + 4 * density[1:-1:2].sum() + 2 * density[2:-1:2].sum())
    return 0.5 + math.copysign(area, t)


def t_quantile(p, df):
    """The t value below which a fraction p of Student's t distribution lies (bisection)."""
    low, high = -1e3, 1e3
    for _ in range(100):
        mid = (low + high) / 2
        low, high = (mid, high) if t_cdf(mid, df) < p else (low, mid)
    return (low + high) / 2


def finite(values):
    """values as a float array; ValueError if any is NaN or infinite (a result that must not be averaged)."""
    values = np.asarray(values, dtype=float)
    if values.size == 0:
        raise ValueError("no values to summarize")
    if not np.isfinite(values).all():
        raise ValueError(f"{int((~np.isfinite(values)).sum())} of {values.size} values are not finite numbers")
    return values


def describe(values, confidence=0.95):
    """Mean, sample sd, t confidence interval of the mean, min and max of per-seed values."""
    values = finite(values)
    n = len(values)
    if n < 2:
        raise ValueError("a confidence interval needs at least 2 values (seeds); got 1")
    mean, sd = float(values.mean()), float(values.std(ddof=1))
    half = t_quantile(0.5 + confidence / 2, n - 1) * sd / math.sqrt(n)
    return {"n": n, "mean": mean, "sd": sd, "ci": [mean - half, mean + half],
            "min": float(values.min()), "max": float(values.max())}


def paired(a, b, confidence=0.95):
    """Paired comparison of a and b measured on the same seeds: describe() of a - b, with the t
    statistic and the two-sided p-value of the paired t-test."""
    d = describe(finite(a) - finite(b), confidence)
    if d["sd"] > 0:
        t = d["mean"] / (d["sd"] / math.sqrt(d["n"]))
    else:  # every difference equal: no evidence of a difference if it is zero, certainty if not
        t = 0.0 if d["mean"] == 0 else math.copysign(math.inf, d["mean"])
    p = 2 * (1 - t_cdf(abs(t), d["n"] - 1)) if math.isfinite(t) else 0.0
    return {**d, "t": t, "p": min(1.0, max(p, 0.0))}


def holm(p_values):
    """Holm-Bonferroni adjusted p-values (same order as given)."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    adjusted, running = [0.0] * len(p_values), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


VERDICTS = ("higher", "lower", "within noise")


def verdict(ci):
    """The word of VERDICTS a 95% CI of a difference supports: "higher" above 0, "lower" below, else "within noise"."""
    higher, lower, within = VERDICTS
    return higher if ci[0] > 0 else lower if ci[1] < 0 else within
