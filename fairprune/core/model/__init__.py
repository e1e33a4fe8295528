"""Model plumbing: architecture adapters (``adapters``), devices and offloading (``devices``), freeing memory
(``memory``), torch.distributed sharding (``distributed``), the one Jensen–Shannon divergence (``divergence``)
and the language-model scoring primitives (``lm_scoring``: padding, batching, chunked log-probabilities;
``benchmark_scoring``: whole-sentence and choice scoring; ``benchmark_base``: the base class of benchmark
evaluators). Imports only ``contract``; plugins may import it.
"""
