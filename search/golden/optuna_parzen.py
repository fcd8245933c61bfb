"""Prints Optuna's Parzen-estimator log-densities that search/src/parzen.rs's test
`log_densities_equal_optunas` compares with (golden values, regenerate by hand):

    python3 -m venv /tmp/optuna-venv && /tmp/optuna-venv/bin/pip install optuna
    /tmp/optuna-venv/bin/python search/golden/optuna_parzen.py

Measured with Optuna 5.0.0 and numpy 2.4.6.
"""
import numpy as np
from optuna.distributions import FloatDistribution, IntDistribution, CategoricalDistribution
from optuna.samplers._tpe.parzen_estimator import _ParzenEstimator, _ParzenEstimatorParameters
from optuna.samplers._tpe.sampler import default_weights
params = _ParzenEstimatorParameters(prior_weight=1.0, consider_magic_clip=True, consider_endpoints=False, weights=default_weights, multivariate=False)
cases = [
  ("uniform", FloatDistribution(0.0, 0.5), [0.1, 0.35, 0.2, 0.21], [0.0, 0.05, 0.2, 0.33, 0.5]),
  ("loguniform", FloatDistribution(1e-3, 1.0, log=True), [0.01, 0.05, 0.5], [1e-3, 0.003, 0.04, 0.9, 1.0]),
  ("intlog", IntDistribution(16, 256, log=True), [32, 100, 101, 250], [16, 31, 99, 256]),
  ("int", IntDistribution(1, 5), [2, 2, 5], [1, 2, 3, 5]),
  ("choice", CategoricalDistribution([0,1,2,3]), [3, 3, 0], [0, 1, 2, 3]),
  ("many", FloatDistribution(0.0, 1.0), list(np.linspace(0.0, 1.0, 30)**2), [0.0, 0.3, 0.7, 1.0]),
  ("empty", FloatDistribution(-2.0, 3.0), [], [-2.0, 0.5, 3.0]),
]
for name, dist, obs, xs in cases:
    o = np.asarray([dist.to_internal_repr(v) for v in obs], dtype=float)
    pe = _ParzenEstimator({"x": o}, {"x": dist}, params)
    vals = pe.log_pdf({"x": np.asarray([float(x) for x in xs])})
    print(name, [repr(float(v)) for v in vals])

# The joint (multivariate) estimator over three parameters at once.
space = {
    "x": FloatDistribution(0.0, 1.0),
    "n": IntDistribution(1, 10, log=True),
    "c": CategoricalDistribution([0, 1, 2]),
}
rows = [(0.2, 3, 0), (0.25, 4, 0), (0.9, 9, 2), (0.5, 1, 1)]
obs = {k: np.asarray([float(r[i]) for r in rows]) for i, k in enumerate(space)}
pe = _ParzenEstimator(obs, space, params)
points = [(0.22, 3, 0), (0.9, 9, 2), (0.22, 9, 2), (1.0, 10, 1)]
vals = pe.log_pdf({k: np.asarray([float(p[i]) for p in points]) for i, k in enumerate(space)})
print("joint", [repr(float(v)) for v in vals])
