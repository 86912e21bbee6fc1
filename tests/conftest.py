import os

import torch
from hypothesis import HealthCheck, settings

# deterministic examples in CI; property tests still sample hundreds of cases
settings.register_profile("ci", derandomize=True, deadline=None, max_examples=40,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("dev", deadline=None, max_examples=40,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile(os.environ.get("LIPCERT_HYPOTHESIS", "ci"))
torch.set_num_threads(2)
